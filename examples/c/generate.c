/* Greedy generation through a quantized KV cache with innerq's C ABI.
 *
 *   innerq_generate MODEL.gguf PROMPT [N_TOKENS [SPEC]]
 *
 * Prints the text, then the cache's bytes against an f16 cache of the same
 * tokens. Every call's status is checked; innerq_last_error() says why. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <innerq/innerq.h>

#define TRY(call)                                                    \
  do {                                                               \
    if ((call) != INNERQ_OK) {                                       \
      fprintf(stderr, "innerq_generate: %s\n", innerq_last_error()); \
      exit(1);                                                       \
    }                                                                \
  } while (0)

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s MODEL.gguf PROMPT [N_TOKENS [SPEC]]\n", argv[0]);
    return 2;
  }
  const int n_new = argc > 3 ? atoi(argv[3]) : 32;
  const char* spec_text = argc > 4 ? argv[4] : "innerq";

  innerq_model* model;
  TRY(innerq_model_load(argv[1], &model));
  innerq_model_info info;
  TRY(innerq_model_info_get(model, &info));

  /* A pool for one sequence of up to 4096 tokens, sized by the plan. */
  innerq_spec* spec;
  innerq_shape shape;
  innerq_plan plan;
  innerq_pool* pool;
  innerq_seq* seq;
  TRY(innerq_spec_parse(spec_text, &spec));
  TRY(innerq_model_shape(model, 4096, &shape));
  TRY(innerq_plan_memory(spec, &shape, 1, 4096, &plan));
  TRY(innerq_pool_create(spec, &shape, 1, plan.bytes, &pool));
  TRY(innerq_seq_create(pool, &seq));

  int64_t n_prompt;
  int32_t tokens[4096];
  TRY(innerq_tokenize(model, argv[2], strlen(argv[2]), 1, 0, tokens, 4096, &n_prompt));
  float* logits = malloc(sizeof(float) * (size_t)info.n_vocab);
  innerq_sampler_params params = innerq_sampler_default_params(); /* greedy */
  innerq_sampler* sampler;
  TRY(innerq_sampler_create(&params, &sampler));

  TRY(innerq_model_extend(model, &seq, 1, tokens, n_prompt, 0, logits));
  int64_t n = n_prompt;
  for (int i = 0; i < n_new && n < shape.max_tokens; ++i) {
    int32_t next;
    TRY(innerq_sample(sampler, logits, info.n_vocab, &next));
    if (innerq_token_ends_generation(model, next)) break;
    tokens[n++] = next;
    TRY(innerq_model_decode(model, &seq, &next, 1, logits));
  }

  char text[65536];
  size_t len;
  TRY(innerq_detokenize(model, tokens, n, text, sizeof text, &len));
  innerq_memory memory;
  TRY(innerq_seq_memory(seq, &memory));
  printf("%s\n", text);
  printf("kv cache %s: %lld tokens, %llu bytes held (%llu reserved) vs %llu as f16\n", spec_text,
         (long long)innerq_seq_n_tokens(seq), (unsigned long long)memory.total,
         (unsigned long long)memory.reserved, (unsigned long long)memory.f16_bytes);

  innerq_sampler_free(sampler);
  innerq_seq_free(seq);
  innerq_pool_free(pool);
  innerq_spec_free(spec);
  innerq_model_free(model);
  free(logits);
  return 0;
}
