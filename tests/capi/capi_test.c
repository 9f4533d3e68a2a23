/* The C ABI (include/innerq/innerq.h) driven from C11: every call, its
 * results against references computed here in double precision, and its
 * error paths (status, message, nothing changed).
 *
 *   capi_test MODEL.gguf TMPDIR      (MODEL: the tiny stories260K Llama)
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "innerq/innerq.h"

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                                            \
  do {                                                                                         \
    ++checks;                                                                                  \
    if (!(cond)) {                                                                             \
      ++failures;                                                                              \
      fprintf(stderr, "%s:%d: CHECK(%s) failed (last error: %s)\n", __FILE__, __LINE__, #cond, \
              innerq_last_error());                                                            \
    }                                                                                          \
  } while (0)

/* A call that must return `want`, and on failure leave a message naming
 * `needle`. */
#define CHECK_STATUS(call, want, needle)                                                           \
  do {                                                                                             \
    innerq_status got_ = (call);                                                                   \
    ++checks;                                                                                      \
    if (got_ != (want)) {                                                                          \
      ++failures;                                                                                  \
      fprintf(stderr, "%s:%d: %s returned %s, expected %s (last error: %s)\n", __FILE__, __LINE__, \
              #call, innerq_status_name(got_), innerq_status_name(want), innerq_last_error());     \
    } else if ((want) != INNERQ_OK && strstr(innerq_last_error(), (needle)) == NULL) {             \
      ++failures;                                                                                  \
      fprintf(stderr, "%s:%d: %s: message '%s' does not name '%s'\n", __FILE__, __LINE__, #call,   \
              innerq_last_error(), (needle));                                                      \
    }                                                                                              \
  } while (0)

#define CHECK_OK(call) CHECK_STATUS(call, INNERQ_OK, "")

/* Deterministic gaussian-ish values (sum of uniforms). */
static unsigned long long rng_state = 88172645463325252ull;
static double uniform(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (double)(rng_state >> 11) / 9007199254740992.0;
}
static float gauss(void) {
  double s = 0.0;
  for (int i = 0; i < 12; ++i) s += uniform();
  return (float)(s - 6.0);
}
static void fill(float* x, size_t n, float scale) {
  for (size_t i = 0; i < n; ++i) x[i] = gauss() * scale;
}

/* ---------------------------------------------------------------------------
 * Version, capabilities, settings
 * ------------------------------------------------------------------------- */
static void test_version_and_capabilities(void) {
  CHECK(strcmp(innerq_version(), INNERQ_VERSION_STRING) == 0);
  CHECK(innerq_version_number() ==
        INNERQ_VERSION_MAJOR * 10000 + INNERQ_VERSION_MINOR * 100 + INNERQ_VERSION_PATCH);
  const char* kinds[] = {"f32", "f16", "q8_0", "q4_0", "kivi", "kivi4", "innerq", "innerq-paper"};
  CHECK(innerq_kind_count() == 8);
  for (int i = 0; i < 8; ++i) CHECK(strcmp(innerq_kind_name(i), kinds[i]) == 0);
  CHECK(innerq_kind_name(8) == NULL);
  CHECK(innerq_kind_name(-1) == NULL);
  /* Every kind is a spec that parses. */
  for (int i = 0; i < innerq_kind_count(); ++i) {
    innerq_spec* s = NULL;
    CHECK_OK(innerq_spec_parse(innerq_kind_name(i), &s));
    innerq_spec_free(s);
  }
  int bits[8];
  CHECK(innerq_bit_widths(bits, 8) == 4);
  CHECK(bits[0] == 2 && bits[1] == 3 && bits[2] == 4 && bits[3] == 8);
  CHECK(innerq_bit_widths(NULL, 0) == 4);
  int groups[8];
  CHECK(innerq_group_sizes(groups, 2) == 3); /* count even when cap is smaller */
  CHECK(groups[0] == 32 && groups[1] == 64);
  CHECK(strlen(innerq_simd_target()) > 0);
  CHECK(innerq_cuda_compiled() == 0 || innerq_cuda_compiled() == 1);
  CHECK(strlen(innerq_wait_policy()) > 0);
  for (int s = INNERQ_OK; s <= INNERQ_ERROR_INTERNAL; ++s) {
    CHECK(strcmp(innerq_status_name((innerq_status)s), "unknown status") != 0);
  }
  CHECK(strcmp(innerq_status_name((innerq_status)99), "unknown status") == 0);

  CHECK_OK(innerq_set_threads(1));
  CHECK(innerq_threads() == 1);
  CHECK_STATUS(innerq_set_threads(-1), INNERQ_ERROR_INVALID_ARGUMENT, "n_threads -1");
  CHECK(innerq_threads() == 1); /* unchanged by the refused call */
  CHECK(strstr(innerq_last_error(), "innerq_set_threads") == innerq_last_error());
  CHECK_OK(innerq_set_threads(0));
  CHECK(innerq_threads() >= 1);
  CHECK_OK(innerq_set_threads(2));
}

/* ---------------------------------------------------------------------------
 * Specs and plans
 * ------------------------------------------------------------------------- */
static void test_specs(void) {
  innerq_spec* s = NULL;
  CHECK_OK(innerq_spec_parse("innerq;1:k=4,v=4", &s));
  char buf[256];
  size_t len = 0;
  CHECK_OK(innerq_spec_describe(s, -1, 0, buf, sizeof buf, &len));
  CHECK(strcmp(buf, "innerq;1:k=4,v=4") == 0 && len == strlen(buf));
  CHECK_OK(innerq_spec_describe(s, 0, 2, buf, sizeof buf, &len));
  CHECK(strstr(buf, "innerq") != NULL && strstr(buf, "k3") != NULL);
  CHECK_OK(innerq_spec_describe(s, 1, 2, buf, sizeof buf, &len));
  CHECK(strstr(buf, "k4") != NULL && strstr(buf, "v4") != NULL);
  size_t need = 0;
  CHECK_STATUS(innerq_spec_describe(s, 1, 2, buf, 4, &need), INNERQ_ERROR_BUFFER_TOO_SMALL,
               "needs");
  CHECK(need == len);
  CHECK_STATUS(innerq_spec_describe(s, 2, 2, buf, sizeof buf, &len), INNERQ_ERROR_INVALID_ARGUMENT,
               "layer 2");
  CHECK_STATUS(innerq_spec_describe(NULL, -1, 0, buf, sizeof buf, &len),
               INNERQ_ERROR_INVALID_ARGUMENT, "spec is NULL");
  CHECK_STATUS(innerq_spec_describe(s, -1, 0, buf, sizeof buf, NULL), INNERQ_ERROR_INVALID_ARGUMENT,
               "len is NULL");
  innerq_spec_free(s);

  /* Which head_dims a spec can store. */
  innerq_spec* d = NULL;
  CHECK_OK(innerq_spec_parse("innerq", &d));
  CHECK_OK(innerq_spec_check_head_dim(d, 4, 64));
  CHECK_OK(innerq_spec_check_head_dim(d, 4, 256));
  CHECK_STATUS(innerq_spec_check_head_dim(d, 4, 48), INNERQ_ERROR_INVALID_ARGUMENT, "48");
  CHECK_STATUS(innerq_spec_check_head_dim(d, 4, 0), INNERQ_ERROR_INVALID_ARGUMENT, "head_dim 0");
  innerq_spec_free(d);
  CHECK_OK(innerq_spec_parse("f16", &d));
  CHECK_OK(innerq_spec_check_head_dim(d, 4, 8));
  innerq_spec_free(d);
  CHECK_OK(innerq_spec_parse("f16;1=innerq", &d));
  CHECK_STATUS(innerq_spec_check_head_dim(d, 4, 8), INNERQ_ERROR_INVALID_ARGUMENT, "8");
  CHECK_STATUS(innerq_spec_check_head_dim(d, 0, 8), INNERQ_ERROR_INVALID_ARGUMENT, "n_layers 0");
  innerq_spec_free(d);

  innerq_spec* bad = (innerq_spec*)&bad; /* must stay untouched on failure */
  CHECK_STATUS(innerq_spec_parse("innerq:k=5", &bad), INNERQ_ERROR_INVALID_ARGUMENT, "k=5");
  CHECK(bad == (innerq_spec*)&bad);
  CHECK_STATUS(innerq_spec_parse("nonsense", &bad), INNERQ_ERROR_INVALID_ARGUMENT, "nonsense");
  CHECK_STATUS(innerq_spec_parse(NULL, &bad), INNERQ_ERROR_INVALID_ARGUMENT, "text is NULL");
  CHECK_STATUS(innerq_spec_parse("f16", NULL), INNERQ_ERROR_INVALID_ARGUMENT, "out is NULL");
  innerq_spec_free(NULL);
}

static void test_plans(void) {
  innerq_spec* s = NULL;
  CHECK_OK(innerq_spec_parse("innerq", &s));
  innerq_shape shape = {4, 2, 64, 8192, NULL};
  innerq_plan p;
  CHECK_OK(innerq_plan_memory(s, &shape, 2, 4000, &p));
  CHECK(p.block_tokens == 256);
  CHECK(p.bytes > p.sequence_bytes && p.sequence_bytes > 0);
  CHECK(p.f16_bytes == 2ull * 4000 * 2 * 2 * 4 * 2 * 64);
  CHECK(p.bytes < p.f16_bytes / 3); /* about 3.25 bits per value plus windows */
  /* The plan grows with the tokens, and plan_tokens inverts it. */
  int64_t tokens = 0;
  CHECK_OK(innerq_plan_tokens(s, &shape, 2, p.bytes, &tokens));
  CHECK(tokens >= 4000);
  innerq_plan more;
  CHECK_OK(innerq_plan_memory(s, &shape, 2, tokens + 1, &more));
  CHECK(more.bytes > p.bytes);
  CHECK_OK(innerq_plan_tokens(s, &shape, 2, 10, &tokens));
  CHECK(tokens == 0);

  /* Sliding-window layers hold at most their window. */
  const int32_t windows[4] = {16, 0, 16, 0};
  innerq_shape windowed = {4, 2, 64, 8192, windows};
  innerq_plan pw;
  CHECK_OK(innerq_plan_memory(s, &windowed, 2, 4000, &pw));
  CHECK(pw.f16_bytes == 2ull * (4000 + 16) * 2 * 2 * 2 * 2 * 64);
  CHECK(pw.bytes < p.bytes);

  CHECK_STATUS(innerq_plan_memory(s, &shape, 0, 10, &p), INNERQ_ERROR_INVALID_ARGUMENT, "n_seqs 0");
  CHECK_STATUS(innerq_plan_memory(s, &shape, 1, 9000, &p), INNERQ_ERROR_INVALID_ARGUMENT,
               "max_tokens");
  CHECK_STATUS(innerq_plan_memory(s, NULL, 1, 10, &p), INNERQ_ERROR_INVALID_ARGUMENT,
               "shape is NULL");
  CHECK_STATUS(innerq_plan_memory(s, &shape, 1, 10, NULL), INNERQ_ERROR_INVALID_ARGUMENT,
               "out is NULL");
  innerq_shape bad = shape;
  bad.head_dim = 0;
  CHECK_STATUS(innerq_plan_memory(s, &bad, 1, 10, &p), INNERQ_ERROR_INVALID_ARGUMENT, "head_dim 0");
  bad = shape;
  bad.head_dim = 48; /* the default's 64-channel key groups need a multiple of 64 */
  CHECK_STATUS(innerq_plan_memory(s, &bad, 1, 10, &p), INNERQ_ERROR_INVALID_ARGUMENT, "48");
  const int32_t negative[4] = {0, -1, 0, 0};
  bad = shape;
  bad.window = negative;
  CHECK_STATUS(innerq_plan_memory(s, &bad, 1, 10, &p), INNERQ_ERROR_INVALID_ARGUMENT, "window[1]");
  CHECK_STATUS(innerq_plan_tokens(s, &shape, 1, 1000, NULL), INNERQ_ERROR_INVALID_ARGUMENT,
               "tokens is NULL");
  innerq_spec_free(s);
}

/* ---------------------------------------------------------------------------
 * Pools, sequences, append, attention
 * ------------------------------------------------------------------------- */
enum { L = 2, H = 2, D = 64, NQ = 4 };

/* Softmax attention in double of q [NQ][D] over rows k, v [n][D] per KV head
 * (k, v laid out [H][n][D]), query head h reading KV head h / (NQ / H). */
static void reference_attention(const float* k, const float* v, int64_t n, const float* q,
                                double scale, double* out) {
  double* p = malloc((size_t)n * sizeof(double));
  for (int h = 0; h < NQ; ++h) {
    const int kvh = h / (NQ / H);
    double max = -INFINITY;
    for (int64_t t = 0; t < n; ++t) {
      double s = 0.0;
      for (int c = 0; c < D; ++c) s += (double)q[h * D + c] * k[(kvh * n + t) * D + c];
      p[t] = s * scale;
      if (p[t] > max) max = p[t];
    }
    double sum = 0.0;
    for (int64_t t = 0; t < n; ++t) sum += (p[t] = exp(p[t] - max));
    for (int c = 0; c < D; ++c) {
      double acc = 0.0;
      for (int64_t t = 0; t < n; ++t) acc += p[t] * v[(kvh * n + t) * D + c];
      out[h * D + c] = acc / sum;
    }
  }
  free(p);
}

/* The largest |got − want| relative to max |want|. */
static double max_error(const float* got, const double* want, size_t n) {
  double err = 0.0, mag = 1e-30;
  for (size_t i = 0; i < n; ++i) {
    const double e = fabs((double)got[i] - want[i]);
    if (e > err) err = e;
    if (fabs(want[i]) > mag) mag = fabs(want[i]);
  }
  return err / mag;
}

static innerq_pool* make_pool(const char* text, int32_t max_seqs, uint64_t budget) {
  innerq_spec* s = NULL;
  innerq_pool* pool = NULL;
  innerq_shape shape = {L, H, D, 4096, NULL};
  CHECK_OK(innerq_spec_parse(text, &s));
  CHECK_OK(innerq_pool_create(s, &shape, max_seqs, budget, &pool));
  innerq_spec_free(s); /* the pool keeps what it needs */
  return pool;
}

/* f32 cache: attention equals the double reference on the appended rows
 * (K/V given as [tokens][heads][D] and, transposed, via strides). */
static void test_f32_attention_and_strides(void) {
  innerq_pool* pool = make_pool("f32", 0, 0);
  innerq_seq* seq = NULL;
  CHECK_OK(innerq_seq_create(pool, &seq));
  const int64_t n = 300;
  float* k = malloc(sizeof(float) * H * n * D); /* [H][n][D]: the strided form */
  float* v = malloc(sizeof(float) * H * n * D);
  fill(k, (size_t)H * n * D, 1.0f);
  fill(v, (size_t)H * n * D, 1.0f);
  for (int layer = 0; layer < L; ++layer) {
    /* Tokens 0..99 in one call, the rest in two more: strides {D, n*D}. */
    int64_t at = 0;
    const int64_t parts[3] = {100, 1, 199};
    for (int i = 0; i < 3; ++i) {
      innerq_view kv = {k + at * D, INNERQ_DTYPE_F32, {D, n * D}};
      innerq_view vv = {v + at * D, INNERQ_DTYPE_F32, {D, n * D}};
      CHECK_OK(innerq_append(&seq, 1, layer, &kv, &vv, (int32_t)parts[i]));
      at += parts[i];
    }
  }
  CHECK(innerq_seq_n_tokens(seq) == n);
  float q[NQ * D], out[NQ * D];
  double want[NQ * D];
  fill(q, NQ * D, 0.5f);
  innerq_view qv = innerq_view_packed(q, INNERQ_DTYPE_F32, NQ, D);
  innerq_view ov = innerq_view_packed(out, INNERQ_DTYPE_F32, NQ, D);
  CHECK_OK(innerq_attend(&seq, 1, 1, &qv, NQ, 0.0f, &ov));
  reference_attention(k, v, n, q, 1.0 / sqrt((double)D), want);
  CHECK(max_error(out, want, NQ * D) < 1e-5);
  /* An explicit scale. */
  CHECK_OK(innerq_attend(&seq, 1, 1, &qv, NQ, 0.3f, &ov));
  reference_attention(k, v, n, q, 0.3, want);
  CHECK(max_error(out, want, NQ * D) < 1e-5);
  /* A visible prefix of 120: query i sees 120 + i positions. */
  float q2[2 * NQ * D], out2[2 * NQ * D];
  fill(q2, 2 * NQ * D, 0.5f);
  innerq_view q2v = innerq_view_packed(q2, INNERQ_DTYPE_F32, NQ, D);
  innerq_view o2v = innerq_view_packed(out2, INNERQ_DTYPE_F32, NQ, D);
  CHECK_OK(innerq_attend_chunk(seq, 0, &q2v, 2, NQ, 120, 0.0f, &o2v));
  for (int i = 0; i < 2; ++i) {
    /* The reference over the first 120 + i rows of each head. */
    float* kp = malloc(sizeof(float) * H * (120 + i) * D);
    float* vp = malloc(sizeof(float) * H * (120 + i) * D);
    for (int h = 0; h < H; ++h) {
      memcpy(kp + (size_t)h * (120 + i) * D, k + (size_t)h * n * D, sizeof(float) * (120 + i) * D);
      memcpy(vp + (size_t)h * (120 + i) * D, v + (size_t)h * n * D, sizeof(float) * (120 + i) * D);
    }
    reference_attention(kp, vp, 120 + i, q2 + i * NQ * D, 1.0 / sqrt((double)D), want);
    CHECK(max_error(out2 + i * NQ * D, want, NQ * D) < 1e-5);
    free(kp);
    free(vp);
  }
  /* f16 and bf16 queries and outputs: the same within their rounding. */
  uint16_t q16[NQ * D], o16[NQ * D];
  for (int i = 0; i < NQ * D; ++i) { /* bf16 of q: the upper half of its bits */
    uint32_t bits;
    memcpy(&bits, &q[i], 4);
    q16[i] = (uint16_t)(bits >> 16);
  }
  innerq_view qb = innerq_view_packed(q16, INNERQ_DTYPE_BF16, NQ, D);
  innerq_view ob = innerq_view_packed(o16, INNERQ_DTYPE_BF16, NQ, D);
  CHECK_OK(innerq_attend(&seq, 1, 1, &qb, NQ, 0.0f, &ob));
  float qt[NQ * D], ot[NQ * D];
  for (int i = 0; i < NQ * D; ++i) {
    uint32_t bits = (uint32_t)q16[i] << 16;
    memcpy(&qt[i], &bits, 4);
    bits = (uint32_t)o16[i] << 16;
    memcpy(&ot[i], &bits, 4);
  }
  reference_attention(k, v, n, qt, 1.0 / sqrt((double)D), want);
  CHECK(max_error(ot, want, NQ * D) < 1.0 / 128); /* bf16 output rounding */

  /* Dequantize gives the rows back (f32: exactly), [H][n][D]. */
  int64_t count = -1, first = -1;
  CHECK_OK(innerq_seq_dequantize(seq, 0, NULL, NULL, &count, &first));
  CHECK(count == n && first == 0);
  float* kd = malloc(sizeof(float) * H * n * D);
  float* vd = malloc(sizeof(float) * H * n * D);
  innerq_view kdv = innerq_view_packed(kd, INNERQ_DTYPE_F32, n, D);
  innerq_view vdv = innerq_view_packed(vd, INNERQ_DTYPE_F32, n, D);
  CHECK_OK(innerq_seq_dequantize(seq, 0, &kdv, &vdv, &count, &first));
  CHECK(memcmp(kd, k, sizeof(float) * H * n * D) == 0);
  CHECK(memcmp(vd, v, sizeof(float) * H * n * D) == 0);
  free(kd);
  free(vd);

  /* Errors name the argument; nothing is stored. */
  innerq_view kv1 = innerq_view_packed(k, INNERQ_DTYPE_F32, H, D);
  innerq_view bad = kv1;
  CHECK_STATUS(innerq_append(&seq, 1, 2, &kv1, &kv1, 1), INNERQ_ERROR_INVALID_ARGUMENT, "layer 2");
  CHECK_STATUS(innerq_append(&seq, 1, 0, &kv1, &kv1, 0), INNERQ_ERROR_INVALID_ARGUMENT,
               "n_tokens 0");
  bad.dtype = (innerq_dtype)7;
  CHECK_STATUS(innerq_append(&seq, 1, 0, &bad, &kv1, 1), INNERQ_ERROR_INVALID_ARGUMENT,
               "k[0].dtype");
  bad = kv1;
  bad.data = NULL;
  CHECK_STATUS(innerq_append(&seq, 1, 0, &kv1, &bad, 1), INNERQ_ERROR_INVALID_ARGUMENT,
               "v[0].data");
  CHECK_STATUS(innerq_append(&seq, 1, 0, NULL, &kv1, 1), INNERQ_ERROR_INVALID_ARGUMENT,
               "k is NULL");
  CHECK_STATUS(innerq_append(NULL, 1, 0, &kv1, &kv1, 1), INNERQ_ERROR_INVALID_ARGUMENT,
               "seqs is NULL");
  innerq_seq* twice[2] = {seq, seq};
  innerq_view two[2] = {kv1, kv1};
  CHECK_STATUS(innerq_append(twice, 2, 0, two, two, 1), INNERQ_ERROR_INVALID_ARGUMENT,
               "same sequence");
  float nan_row[H * D];
  fill(nan_row, H * D, 1.0f);
  nan_row[5] = NAN;
  innerq_view nanv = innerq_view_packed(nan_row, INNERQ_DTYPE_F32, H, D);
  CHECK_STATUS(innerq_append(&seq, 1, 0, &nanv, &kv1, 1), INNERQ_ERROR_INVALID_ARGUMENT,
               "not finite");
  CHECK(innerq_seq_n_tokens(seq) == n);
  CHECK_STATUS(innerq_attend(&seq, 1, 0, &qv, 3, 0.0f, &ov), INNERQ_ERROR_INVALID_ARGUMENT,
               "n_heads 3");
  CHECK_STATUS(innerq_attend(&seq, 1, 0, &qv, NQ, -1.0f, &ov), INNERQ_ERROR_INVALID_ARGUMENT,
               "scale");
  CHECK_STATUS(innerq_attend(&seq, 1, 0, NULL, NQ, 0.0f, &ov), INNERQ_ERROR_INVALID_ARGUMENT,
               "q is NULL");
  CHECK_STATUS(innerq_attend_chunk(seq, 0, &q2v, 2, NQ, n, 0.0f, &o2v),
               INNERQ_ERROR_INVALID_ARGUMENT, "n_visible");
  CHECK_STATUS(innerq_attend_chunk(seq, 0, &q2v, 0, NQ, 10, 0.0f, &o2v),
               INNERQ_ERROR_INVALID_ARGUMENT, "n_q 0");
  CHECK_STATUS(innerq_seq_dequantize(seq, 0, &kdv, NULL, &count, &first),
               INNERQ_ERROR_INVALID_ARGUMENT, "both");

  /* An empty sequence has nothing to attend to. */
  innerq_seq* empty = NULL;
  CHECK_OK(innerq_seq_create(pool, &empty));
  CHECK_STATUS(innerq_attend(&empty, 1, 0, &qv, NQ, 0.0f, &ov), INNERQ_ERROR_INVALID_ARGUMENT,
               "holds no tokens");
  innerq_seq_free(empty);
  innerq_seq_free(seq);
  innerq_pool_free(pool);
  free(k);
  free(v);
}

/* Attention of one query head over its KV head's rows k, v [n][D] (double),
 * scores q.k * scale: out [D]. */
static void attend_rows(const float* k, const float* v, int64_t n, const float* q, double scale,
                        double* out) {
  double max = -INFINITY, sum = 0.0;
  double* p = malloc((size_t)n * sizeof(double));
  for (int64_t t = 0; t < n; ++t) {
    double s = 0.0;
    for (int c = 0; c < D; ++c) s += (double)q[c] * k[t * D + c];
    p[t] = s * scale;
    if (p[t] > max) max = p[t];
  }
  for (int64_t t = 0; t < n; ++t) sum += (p[t] = exp(p[t] - max));
  for (int c = 0; c < D; ++c) {
    double acc = 0.0;
    for (int64_t t = 0; t < n; ++t) acc += p[t] * v[t * D + c];
    out[c] = acc / sum;
  }
  free(p);
}

/* What float32 arithmetic can move an attention output over n rows whose
 * largest |value| is vmax: n weighted sums, the chunk merge and a rotation
 * back (at most 8 steps), eps·vmax a term (tests/python/conftest.py). */
static double f32_sum_tolerance(int64_t n, double vmax) {
  return (double)(n + 64) * 8 * 1.1920928955078125e-7 * vmax;
}

/* The fused attention of `seq`'s layer against the double reference over its
 * dequantized rows kd, vd [H][n][D], on two inputs with tight derived bounds
 * (the same as tests/python/conftest.py's uniform_case and peaked_case):
 * q = 0 (the plain mean of the rows, exact int8/uint8 paths), and per query
 * head a query along the key that leads its own direction most within
 * picks[h] (a range of positions), scaled so that its score leads every
 * other by 30 after the worst int8 error F·√D·|q|·(|k̂| + mu)/(254·√D): the
 * fused result must be that token's value row. mu bounds the centering
 * mean, ratio (F) the key factors' max/min. */
static void check_structured_cases(innerq_seq* seq, int layer, const float* kd, const float* vd,
                                   int64_t n, const int64_t picks[NQ][2], double mu, double ratio,
                                   const char* spec) {
  const double scale = 1.0 / sqrt((double)D);
  double vmax = 0.0;
  for (int64_t i = 0; i < H * n * D; ++i) vmax = fmax(vmax, fabs(vd[i]));
  float q[NQ * D], out[NQ * D];
  double want[D];
  innerq_view qv = innerq_view_packed(q, INNERQ_DTYPE_F32, NQ, D);
  innerq_view ov = innerq_view_packed(out, INNERQ_DTYPE_F32, NQ, D);
  for (int peaked = 0; peaked < 2; ++peaked) {
    memset(q, 0, sizeof q);
    double tol = f32_sum_tolerance(n, vmax);
    for (int h = 0; h < NQ && peaked; ++h) {
      const float* k = kd + (int64_t)(h / (NQ / H)) * n * D;
      double kmax = 0.0, best_gap = 0.0;
      int64_t best = -1;
      for (int64_t t = 0; t < n; ++t) {
        double s = 0.0;
        for (int c = 0; c < D; ++c) s += (double)k[t * D + c] * k[t * D + c];
        kmax = fmax(kmax, sqrt(s));
      }
      for (int64_t j = picks[h][0]; j < picks[h][1]; ++j) {
        double nj = 0.0, lead = INFINITY;
        for (int c = 0; c < D; ++c) nj += (double)k[j * D + c] * k[j * D + c];
        nj = sqrt(nj);
        for (int64_t t = 0; t < n; ++t) {
          if (t == j) continue;
          double dot = 0.0;
          for (int c = 0; c < D; ++c) dot += (double)k[t * D + c] * k[j * D + c];
          lead = fmin(lead, nj - dot / nj);
        }
        if (lead > best_gap) best_gap = lead, best = j;
      }
      CHECK(best >= 0);
      if (best < 0) return;
      const double err = ratio * scale * sqrt((double)D) * (kmax + mu) / 254;
      const double lead = scale * best_gap;
      CHECK(lead > 2.5 * err); /* the test's precondition: room for a margin of 30 */
      double nb = 0.0;
      for (int c = 0; c < D; ++c) nb += (double)k[best * D + c] * k[best * D + c];
      const double alpha = 30 / (lead - 2 * err) / sqrt(nb);
      for (int c = 0; c < D; ++c) q[h * D + c] = (float)(alpha * k[best * D + c]);
    }
    if (peaked) tol += 2 * (double)n * exp(-30.0) * vmax;
    CHECK_OK(innerq_attend(&seq, 1, layer, &qv, NQ, 0.0f, &ov));
    double worst = 0.0;
    for (int h = 0; h < NQ; ++h) {
      const int64_t g = h / (NQ / H);
      attend_rows(kd + g * n * D, vd + g * n * D, n, q + h * D, scale, want);
      for (int c = 0; c < D; ++c) worst = fmax(worst, fabs(out[h * D + c] - want[c]));
    }
    if (!(worst <= tol))
      fprintf(stderr, "%s, %s: worst error %g over %g\n", spec, peaked ? "peaked" : "q = 0", worst,
              tol);
    CHECK(worst <= tol);
  }
}

/* Every kind: the fused attention against the double reference over what
 * the cache dequantizes to, on the structured inputs above; against the
 * reference over the original rows within b-bit groups' error where that
 * bound is below 1 (b >= 3: a 2-bit bound of 1.24 could pass any output;
 * tests/kv checks their codes). Batched attention of several sequences
 * equals attending to each alone. */
static void test_every_kind(void) {
  const char* specs[] = {"f32",   "f16",    "q8_0",         "q4_0",        "kivi",
                         "kivi4", "innerq", "innerq-paper", "q4_0:rot=kv", "innerq:k=4,v=4"};
  /* Bound on the relative error against the unquantized reference per kind
   * (gaussian rows): b-bit groups reconstruct to about 1.24/(2^b - 1) of
   * their range (tests/attn/decode_attention_test.cc), 3x that for the output. */
  const double bound[] = {1e-5,          4e-3,          3 * 1.24 / 255, 3 * 1.24 / 15,
                          3 * 1.24 / 3,  3 * 1.24 / 15, 3 * 1.24 / 7,   3 * 1.24 / 3,
                          3 * 1.24 / 15, 3 * 1.24 / 15};
  const int64_t n = 700;                        /* sink, several blocks and groups, recent window */
  float* k = malloc(sizeof(float) * n * H * D); /* [n][H][D]: the packed form */
  float* v = malloc(sizeof(float) * n * H * D);
  float* kt = malloc(sizeof(float) * H * n * D); /* [H][n][D] for the reference */
  float* vt = malloc(sizeof(float) * H * n * D);
  float* kd = malloc(sizeof(float) * H * n * D); /* [H][n][D] as the cache dequantizes them */
  float* vd = malloc(sizeof(float) * H * n * D);
  fill(k, (size_t)n * H * D, 1.0f);
  fill(v, (size_t)n * H * D, 1.0f);
  for (int64_t t = 0; t < n; ++t)
    for (int h = 0; h < H; ++h) {
      memcpy(kt + (h * n + t) * D, k + (t * H + h) * D, sizeof(float) * D);
      memcpy(vt + (h * n + t) * D, v + (t * H + h) * D, sizeof(float) * D);
    }
  float q[2 * NQ * D], out[2 * NQ * D], alone[NQ * D];
  double want[NQ * D];
  fill(q, 2 * NQ * D, 0.3f);
  for (size_t i = 0; i < sizeof specs / sizeof specs[0]; ++i) {
    innerq_pool* pool = make_pool(specs[i], 2, 0);
    innerq_seq* seqs[2] = {NULL, NULL};
    CHECK_OK(innerq_seq_create(pool, &seqs[0]));
    CHECK_OK(innerq_seq_create(pool, &seqs[1]));
    /* Sequence 0: prefill of 600 then 100 decode steps; sequence 1: 650 at once. */
    for (int layer = 0; layer < L; ++layer) {
      innerq_view kv = innerq_view_packed(k, INNERQ_DTYPE_F32, H, D);
      innerq_view vv = innerq_view_packed(v, INNERQ_DTYPE_F32, H, D);
      CHECK_OK(innerq_append(&seqs[0], 1, layer, &kv, &vv, 600));
      CHECK_OK(innerq_append(&seqs[1], 1, layer, &kv, &vv, 650));
      for (int64_t t = 600; t < n; ++t) {
        innerq_view kt1 = innerq_view_packed(k + t * H * D, INNERQ_DTYPE_F32, H, D);
        innerq_view vt1 = innerq_view_packed(v + t * H * D, INNERQ_DTYPE_F32, H, D);
        CHECK_OK(innerq_append(&seqs[0], 1, layer, &kt1, &vt1, 1));
      }
    }
    CHECK(innerq_seq_n_tokens(seqs[0]) == n && innerq_seq_n_tokens(seqs[1]) == 650);
    innerq_view qv = innerq_view_packed(q, INNERQ_DTYPE_F32, NQ, D);
    innerq_view ov = innerq_view_packed(out, INNERQ_DTYPE_F32, NQ, D);
    CHECK_OK(innerq_attend(seqs, 2, 1, &qv, NQ, 0.0f, &ov));
    reference_attention(kt, vt, n, q, 1.0 / sqrt((double)D), want);
    const double err = max_error(out, want, NQ * D);
    if (bound[i] < 1.0 && !(err < bound[i]))
      fprintf(stderr, "%s: relative error %g, bound %g\n", specs[i], err, bound[i]);
    CHECK(bound[i] >= 1.0 || err < bound[i]);

    /* The structured cases, over layer 1 of sequence 0 dequantized. Centered
     * kinds: |mu| <= the longest original key; sqrt-max key factors: their
     * ratio from the non-sink keys of the first flush (the 600-token append). */
    int64_t count = 0, first = 0;
    CHECK_OK(innerq_seq_dequantize(seqs[0], 1, NULL, NULL, &count, &first));
    CHECK(count == n && first == 0);
    innerq_view kdv = innerq_view_packed(kd, INNERQ_DTYPE_F32, n, D);
    innerq_view vdv = innerq_view_packed(vd, INNERQ_DTYPE_F32, n, D);
    CHECK_OK(innerq_seq_dequantize(seqs[0], 1, &kdv, &vdv, &count, &first));
    const int centered = strcmp(specs[i], "innerq") == 0 || strcmp(specs[i], "innerq:k=4,v=4") == 0;
    double mu = 0.0, ratio = 1.0;
    for (int64_t t = 0; t < n && centered; ++t)
      for (int h = 0; h < H; ++h) {
        double s2 = 0.0;
        for (int c = 0; c < D; ++c) s2 += (double)k[(t * H + h) * D + c] * k[(t * H + h) * D + c];
        mu = fmax(mu, sqrt(s2));
      }
    if (strcmp(specs[i], "innerq-paper") == 0) {
      for (int h = 0; h < H; ++h) {
        double fmin_ = INFINITY, fmax_ = 0.0;
        for (int c = 0; c < D; ++c) {
          double m = 0.0;
          for (int64_t t = 32; t < 600; ++t) m = fmax(m, fabs(k[(t * H + h) * D + c]));
          fmin_ = fmin(fmin_, sqrt(m));
          fmax_ = fmax(fmax_, sqrt(m));
        }
        ratio = fmax(ratio, fmax_ / fmin_);
      }
    }
    const int64_t picks[NQ][2] = {{128, 500}, {0, 32}, {620, 700}, {200, 560}};
    check_structured_cases(seqs[0], 1, kd, vd, n, picks, mu, ratio, specs[i]);
    /* Batched = alone. */
    innerq_view q1 = innerq_view_packed(q + NQ * D, INNERQ_DTYPE_F32, NQ, D);
    innerq_view o1 = innerq_view_packed(alone, INNERQ_DTYPE_F32, NQ, D);
    CHECK_OK(innerq_attend(&seqs[1], 1, 1, &q1, NQ, 0.0f, &o1));
    CHECK(memcmp(alone, out + NQ * D, sizeof alone) == 0);

    /* Memory: the sequence's reserved bytes equal the plan of its tokens. */
    innerq_memory m;
    CHECK_OK(innerq_seq_memory(seqs[0], &m));
    CHECK(m.total == m.codes + m.metadata + m.windows + m.norm);
    CHECK(m.f16_bytes == (uint64_t)n * L * 2 * H * D * 2);
    innerq_spec* s = NULL;
    innerq_plan plan;
    innerq_shape shape = {L, H, D, 4096, NULL};
    CHECK_OK(innerq_spec_parse(specs[i], &s));
    CHECK_OK(innerq_plan_memory(s, &shape, 1, n, &plan));
    CHECK(m.reserved == plan.sequence_bytes);
    innerq_spec_free(s);

    innerq_seq_free(seqs[0]);
    innerq_seq_free(seqs[1]);
    innerq_pool_free(pool);
  }
  free(k);
  free(v);
  free(kt);
  free(vt);
  free(kd);
  free(vd);
}

/* A chunk appended at once to a sequence that holds tokens, then attended
 * over exactly its rows: each query gets what token-by-token decode gave it
 * (innerq_append then innerq_attend after every row), the windows as they
 * were at its position. Same kernels, same stored bytes; they differ in f32
 * summation order and in the int8 rounding of softmax weights relative to
 * another chunk maximum (tests/attn/chunk_attention_test.cc), below 1e-3 of
 * values of size ~1. The same queries read against the layer as it stands
 * (one query fewer, so not the recorded rows) differ by more for windowed
 * kinds: the check can fail. */
static void test_chunk_attention(void) {
  const char* specs[] = {"f16", "q4_0", "kivi", "innerq", "innerq:sink=8,recent=40,g=32"};
  const int windowed[] = {0, 0, 1, 1, 1};
  enum { kPrefix = 3, kChunks = 4, kMaxChunk = 64 };
  const int chunks[kChunks] = {7, 33, 64, 40};
  const int64_t n = kPrefix + 7 + 33 + 64 + 40;
  float* k = malloc(sizeof(float) * n * H * D);
  float* v = malloc(sizeof(float) * n * H * D);
  float* q = malloc(sizeof(float) * kMaxChunk * NQ * D);
  float* got = malloc(sizeof(float) * kMaxChunk * NQ * D);
  float* loose = malloc(sizeof(float) * kMaxChunk * NQ * D);
  float want[NQ * D];
  fill(k, (size_t)n * H * D, 1.0f);
  fill(v, (size_t)n * H * D, 1.0f);
  for (size_t i = 0; i < sizeof specs / sizeof specs[0]; ++i) {
    innerq_pool* pool = make_pool(specs[i], 2, 0);
    innerq_seq *chunked = NULL, *stepped = NULL;
    CHECK_OK(innerq_seq_create(pool, &chunked));
    CHECK_OK(innerq_seq_create(pool, &stepped));
    innerq_view kv = innerq_view_packed(k, INNERQ_DTYPE_F32, H, D);
    innerq_view vv = innerq_view_packed(v, INNERQ_DTYPE_F32, H, D);
    CHECK_OK(innerq_append(&chunked, 1, 0, &kv, &vv, kPrefix));
    CHECK_OK(innerq_append(&stepped, 1, 0, &kv, &vv, kPrefix));
    double worst = 0.0, old_way = 0.0;
    int64_t at = kPrefix;
    for (int c = 0; c < kChunks; ++c) {
      const int m = chunks[c];
      kv = innerq_view_packed(k + at * H * D, INNERQ_DTYPE_F32, H, D);
      vv = innerq_view_packed(v + at * H * D, INNERQ_DTYPE_F32, H, D);
      CHECK_OK(innerq_append(&chunked, 1, 0, &kv, &vv, m));
      fill(q, (size_t)m * NQ * D, 0.5f);
      innerq_view qv = innerq_view_packed(q, INNERQ_DTYPE_F32, NQ, D);
      innerq_view gv = innerq_view_packed(got, INNERQ_DTYPE_F32, NQ, D);
      CHECK_OK(innerq_attend_chunk(chunked, 0, &qv, m, NQ, at + 1, 0.0f, &gv));
      /* Rows 1.. read against the layer as it stands. */
      innerq_view q1 = innerq_view_packed(q + NQ * D, INNERQ_DTYPE_F32, NQ, D);
      innerq_view lv = innerq_view_packed(loose, INNERQ_DTYPE_F32, NQ, D);
      CHECK_OK(innerq_attend_chunk(chunked, 0, &q1, m - 1, NQ, at + 2, 0.0f, &lv));
      for (int r = 0; r < m; ++r) {
        innerq_view k1 = innerq_view_packed(k + (at + r) * H * D, INNERQ_DTYPE_F32, H, D);
        innerq_view v1 = innerq_view_packed(v + (at + r) * H * D, INNERQ_DTYPE_F32, H, D);
        CHECK_OK(innerq_append(&stepped, 1, 0, &k1, &v1, 1));
        innerq_view qr = innerq_view_packed(q + (size_t)r * NQ * D, INNERQ_DTYPE_F32, NQ, D);
        innerq_view wv = innerq_view_packed(want, INNERQ_DTYPE_F32, NQ, D);
        CHECK_OK(innerq_attend(&stepped, 1, 0, &qr, NQ, 0.0f, &wv));
        for (int x = 0; x < NQ * D; ++x) {
          worst = fmax(worst, fabs((double)got[(size_t)r * NQ * D + x] - want[x]));
          if (r > 0)
            old_way = fmax(old_way, fabs((double)loose[(size_t)(r - 1) * NQ * D + x] - want[x]));
        }
      }
      at += m;
    }
    if (!(worst < 1e-3)) fprintf(stderr, "%s: chunk vs step %g\n", specs[i], worst);
    CHECK(worst < 1e-3);
    CHECK(windowed[i] ? old_way > 1e-2 : old_way < 1e-3);
    /* A truncate clears the record: the same call reads the layer as it is. */
    kv = innerq_view_packed(k, INNERQ_DTYPE_F32, H, D);
    vv = innerq_view_packed(v, INNERQ_DTYPE_F32, H, D);
    CHECK_OK(innerq_append(&chunked, 1, 1, &kv, &vv, (int32_t)n));
    CHECK_OK(innerq_seq_truncate(chunked, n - 1));
    innerq_view qv = innerq_view_packed(q, INNERQ_DTYPE_F32, NQ, D);
    innerq_view gv = innerq_view_packed(got, INNERQ_DTYPE_F32, NQ, D);
    CHECK_OK(innerq_attend_chunk(chunked, 0, &qv, 39, NQ, n - 39, 0.0f, &gv));
    innerq_seq_free(chunked);
    innerq_seq_free(stepped);
    innerq_pool_free(pool);
  }
  free(k);
  free(v);
  free(q);
  free(got);
  free(loose);
}

/* Fork, truncate, save and load, clear. (Keys not centered: a centered
 * cache re-centers the f16 window rows in place at its first flush, so rows
 * appended again after a truncate round once less, and attention would match
 * only to f16 rounding, not bit for bit.) */
static void test_sequence_operations(const char* tmpdir) {
  innerq_pool* pool = make_pool("innerq:kcenter=off", 3, 0);
  innerq_seq* a = NULL;
  CHECK_OK(innerq_seq_create(pool, &a));
  const int64_t n = 600;
  float* k = malloc(sizeof(float) * n * H * D);
  float* v = malloc(sizeof(float) * n * H * D);
  fill(k, (size_t)n * H * D, 1.0f);
  fill(v, (size_t)n * H * D, 1.0f);
  for (int layer = 0; layer < L; ++layer) {
    innerq_view kv = innerq_view_packed(k, INNERQ_DTYPE_F32, H, D);
    innerq_view vv = innerq_view_packed(v, INNERQ_DTYPE_F32, H, D);
    CHECK_OK(innerq_append(&a, 1, layer, &kv, &vv, 500));
  }
  float q[NQ * D], oa[NQ * D], ob[NQ * D];
  fill(q, NQ * D, 0.3f);
  innerq_view qv = innerq_view_packed(q, INNERQ_DTYPE_F32, NQ, D);
  innerq_view oav = innerq_view_packed(oa, INNERQ_DTYPE_F32, NQ, D);
  innerq_view obv = innerq_view_packed(ob, INNERQ_DTYPE_F32, NQ, D);

  /* A fork attends like its parent, and grows apart from it. */
  innerq_seq* b = NULL;
  CHECK_OK(innerq_seq_fork(a, &b));
  CHECK(innerq_seq_n_tokens(b) == 500);
  CHECK_OK(innerq_attend(&a, 1, 0, &qv, NQ, 0.0f, &oav));
  CHECK_OK(innerq_attend(&b, 1, 0, &qv, NQ, 0.0f, &obv));
  CHECK(memcmp(oa, ob, sizeof oa) == 0);
  innerq_pool_stats st;
  CHECK_OK(innerq_pool_stats_get(pool, &st));
  CHECK(st.n_seqs == 2 && st.max_seqs == 3);
  innerq_shape shape;
  CHECK_OK(innerq_pool_shape(pool, &shape));
  CHECK(shape.n_layers == L && shape.n_kv_heads == H && shape.head_dim == D &&
        shape.max_tokens == 4096 && shape.window == NULL);
  CHECK_STATUS(innerq_pool_shape(pool, NULL), INNERQ_ERROR_INVALID_ARGUMENT, "out is NULL");
  CHECK_STATUS(innerq_pool_stats_get(NULL, &st), INNERQ_ERROR_INVALID_ARGUMENT, "pool is NULL");
  /* Attention scratch is reported, released, and grows again on use. */
  uint16_t q16h[NQ * D];
  for (int i = 0; i < NQ * D; ++i) q16h[i] = 0x3c00; /* f16 1.0 */
  innerq_view qh = innerq_view_packed(q16h, INNERQ_DTYPE_F16, NQ, D);
  CHECK_OK(innerq_attend(&a, 1, 0, &qh, NQ, 0.0f, &obv));
  CHECK_OK(innerq_pool_stats_get(pool, &st));
  CHECK(st.scratch_bytes > 0);
  innerq_pool_release_scratch(pool);
  CHECK_OK(innerq_pool_stats_get(pool, &st));
  CHECK(st.scratch_bytes == 0);
  CHECK_OK(innerq_attend(&a, 1, 0, &qh, NQ, 0.0f, &obv));
  innerq_pool_release_scratch(NULL);

  /* Truncate, then append the same rows again: what the parent holds. */
  CHECK_OK(innerq_seq_truncate(b, 450));
  CHECK(innerq_seq_n_tokens(b) == 450);
  for (int layer = 0; layer < L; ++layer) {
    innerq_view kv = innerq_view_packed(k + 450 * H * D, INNERQ_DTYPE_F32, H, D);
    innerq_view vv = innerq_view_packed(v + 450 * H * D, INNERQ_DTYPE_F32, H, D);
    CHECK_OK(innerq_append(&b, 1, layer, &kv, &vv, 50));
  }
  CHECK_OK(innerq_attend(&b, 1, 0, &qv, NQ, 0.0f, &obv));
  CHECK(memcmp(oa, ob, sizeof oa) == 0);
  CHECK_STATUS(innerq_seq_truncate(b, 501), INNERQ_ERROR_INVALID_ARGUMENT, "n_tokens 501");
  CHECK_STATUS(innerq_seq_truncate(b, -1), INNERQ_ERROR_INVALID_ARGUMENT, "n_tokens -1");

  /* Save, load into an empty sequence: the same attention. */
  char path[512];
  snprintf(path, sizeof path, "%s/capi_seq.bin", tmpdir);
  CHECK_OK(innerq_seq_save(a, path));
  innerq_seq* c = NULL;
  CHECK_OK(innerq_seq_create(pool, &c));
  CHECK_OK(innerq_seq_load(c, path));
  CHECK(innerq_seq_n_tokens(c) == 500);
  CHECK_OK(innerq_attend(&c, 1, 0, &qv, NQ, 0.0f, &obv));
  CHECK(memcmp(oa, ob, sizeof oa) == 0);
  CHECK_STATUS(innerq_seq_load(c, path), INNERQ_ERROR_INVALID_ARGUMENT, "empty");
  /* A fourth sequence is past max_seqs. */
  innerq_seq* d = (innerq_seq*)&d;
  CHECK_STATUS(innerq_seq_create(pool, &d), INNERQ_ERROR_POOL_FULL, "max_seqs");
  CHECK(d == (innerq_seq*)&d);
  CHECK_STATUS(innerq_seq_fork(a, &d), INNERQ_ERROR_POOL_FULL, "max_seqs");
  CHECK_OK(innerq_seq_clear(c));
  CHECK(innerq_seq_n_tokens(c) == 0);
  /* A damaged file is an I/O error and leaves the sequence empty. */
  FILE* f = fopen(path, "r+b");
  CHECK(f != NULL);
  if (f != NULL) {
    fseek(f, 100, SEEK_SET);
    fputc(0x5a, f);
    fclose(f);
  }
  CHECK_STATUS(innerq_seq_load(c, path), INNERQ_ERROR_IO, path);
  CHECK(innerq_seq_n_tokens(c) == 0);
  char missing[600];
  snprintf(missing, sizeof missing, "%s/no/such/file", tmpdir);
  CHECK_STATUS(innerq_seq_load(c, missing), INNERQ_ERROR_IO, "no/such/file");
  CHECK_STATUS(innerq_seq_save(a, missing), INNERQ_ERROR_IO, "no/such/file");
  /* A file of another spec is refused. */
  innerq_pool* other = make_pool("kivi", 1, 0);
  innerq_seq* e = NULL;
  CHECK_OK(innerq_seq_create(other, &e));
  CHECK_STATUS(innerq_seq_load(e, path), INNERQ_ERROR_IO, "capi_seq.bin");
  innerq_seq_free(e);
  innerq_pool_free(other);

  /* Freeing the pool handle first is safe: the sequences keep its memory. */
  innerq_pool_free(pool);
  CHECK_OK(innerq_attend(&a, 1, 0, &qv, NQ, 0.0f, &obv));
  CHECK(memcmp(oa, ob, sizeof oa) == 0);
  innerq_seq_free(a);
  innerq_seq_free(b);
  innerq_seq_free(c);
  innerq_seq_free(NULL);
  innerq_pool_free(NULL);
  free(k);
  free(v);
}

/* A fixed pool: the budget the plan gives holds exactly what it planned;
 * past it, POOL_FULL, and the sequence is unchanged. */
static void test_fixed_pool(void) {
  const char* specs[] = {"f16", "q4_0", "kivi", "innerq"};
  const int64_t n = 1000;
  float* k = malloc(sizeof(float) * 2 * n * H * D);
  float* v = malloc(sizeof(float) * 2 * n * H * D);
  fill(k, (size_t)2 * n * H * D, 1.0f);
  fill(v, (size_t)2 * n * H * D, 1.0f);
  for (size_t i = 0; i < sizeof specs / sizeof specs[0]; ++i) {
    innerq_spec* s = NULL;
    innerq_shape shape = {L, H, D, 4096, NULL};
    innerq_plan plan;
    CHECK_OK(innerq_spec_parse(specs[i], &s));
    CHECK_OK(innerq_plan_memory(s, &shape, 2, n, &plan));
    innerq_pool* pool = NULL;
    CHECK_STATUS(innerq_pool_create(s, &shape, 0, plan.bytes, &pool), INNERQ_ERROR_INVALID_ARGUMENT,
                 "max_seqs");
    CHECK_STATUS(innerq_pool_create(s, &shape, 2, 1000, &pool), INNERQ_ERROR_POOL_FULL,
                 "budget of 1000 bytes");
    CHECK(pool == NULL);
    CHECK_OK(innerq_pool_create(s, &shape, 2, plan.bytes, &pool));
    innerq_spec_free(s);
    innerq_pool_stats st;
    CHECK_OK(innerq_pool_stats_get(pool, &st));
    CHECK(st.blocks == plan.blocks);
    CHECK(st.bytes + 2 * (plan.sequence_bytes - (uint64_t)plan.blocks / 2 * plan.block_bytes) ==
          plan.bytes);
    innerq_seq* seqs[2] = {NULL, NULL};
    CHECK_OK(innerq_seq_create(pool, &seqs[0]));
    CHECK_OK(innerq_seq_create(pool, &seqs[1]));
    for (int b = 0; b < 2; ++b)
      for (int layer = 0; layer < L; ++layer) {
        innerq_view kv = innerq_view_packed(k, INNERQ_DTYPE_F32, H, D);
        innerq_view vv = innerq_view_packed(v, INNERQ_DTYPE_F32, H, D);
        CHECK_OK(innerq_append(&seqs[b], 1, layer, &kv, &vv, (int32_t)n));
      }
    /* Token by token until the pool is full. */
    innerq_memory before, after;
    innerq_status status = INNERQ_OK;
    int64_t t = n;
    while (status == INNERQ_OK && t < 2 * n) {
      CHECK_OK(innerq_seq_memory(seqs[0], &before));
      for (int layer = 0; layer < L && status == INNERQ_OK; ++layer) {
        innerq_view kv = innerq_view_packed(k + t * H * D, INNERQ_DTYPE_F32, H, D);
        innerq_view vv = innerq_view_packed(v + t * H * D, INNERQ_DTYPE_F32, H, D);
        status = innerq_append(&seqs[0], 1, layer, &kv, &vv, 1);
        if (status != INNERQ_OK) {
          CHECK(layer == 0); /* every layer needs its next block at the same token */
          CHECK(status == INNERQ_ERROR_POOL_FULL);
          CHECK(strstr(innerq_last_error(), "blocks") != NULL);
          CHECK_OK(innerq_seq_memory(seqs[0], &after));
          CHECK(memcmp(&before, &after, sizeof before) == 0);
          CHECK(innerq_seq_n_tokens(seqs[0]) == t);
        }
      }
      if (status == INNERQ_OK) ++t;
    }
    CHECK(status == INNERQ_ERROR_POOL_FULL);
    CHECK(t < 2 * n);
    /* Freeing the other sequence makes room. */
    innerq_seq_free(seqs[1]);
    for (int layer = 0; layer < L; ++layer) {
      innerq_view kv = innerq_view_packed(k + t * H * D, INNERQ_DTYPE_F32, H, D);
      innerq_view vv = innerq_view_packed(v + t * H * D, INNERQ_DTYPE_F32, H, D);
      CHECK_OK(innerq_append(&seqs[0], 1, layer, &kv, &vv, 1));
    }
    innerq_seq_free(seqs[0]);
    innerq_pool_free(pool);
  }
  free(k);
  free(v);
}

/* A batch append that does not fit stores nothing in any sequence. */
static void test_batch_is_all_or_nothing(void) {
  innerq_spec* s = NULL;
  innerq_shape shape = {L, H, D, 4096, NULL};
  innerq_plan plan;
  CHECK_OK(innerq_spec_parse("f16", &s));
  CHECK_OK(innerq_plan_memory(s, &shape, 2, 500, &plan));
  CHECK(plan.blocks == 4);
  innerq_pool* pool = NULL;
  CHECK_OK(innerq_pool_create(s, &shape, 2, plan.bytes, &pool));
  innerq_spec_free(s);
  innerq_seq* seqs[2] = {NULL, NULL};
  CHECK_OK(innerq_seq_create(pool, &seqs[0]));
  CHECK_OK(innerq_seq_create(pool, &seqs[1]));
  float* k = malloc(sizeof(float) * 600 * H * D);
  fill(k, (size_t)600 * H * D, 1.0f);
  innerq_view kv[2];
  kv[0] = kv[1] = innerq_view_packed(k, INNERQ_DTYPE_F32, H, D);
  CHECK_OK(innerq_append(seqs, 2, 0, kv, kv, 500));
  CHECK_STATUS(innerq_append(seqs, 2, 0, kv, kv, 100), INNERQ_ERROR_POOL_FULL,
               "nothing was stored");
  CHECK(innerq_seq_n_tokens(seqs[0]) == 500); /* layer 0 (the count), layer 1 holds none */
  int64_t n = 0, first = 0;
  CHECK_OK(innerq_seq_dequantize(seqs[0], 0, NULL, NULL, &n, &first));
  CHECK(n == 500);
  CHECK_OK(innerq_seq_dequantize(seqs[1], 0, NULL, NULL, &n, &first));
  CHECK(n == 500);
  CHECK_OK(innerq_append(seqs, 2, 0, kv, kv, 12)); /* fits the blocks held: 512 each */
  innerq_seq_free(seqs[0]);
  innerq_seq_free(seqs[1]);
  innerq_pool_free(pool);
  free(k);
}

/* A sliding-window layer keeps its last `window` positions in f16: attention
 * and dequantize read exactly those. */
static void test_window_layer(void) {
  const int32_t windows[2] = {48, 0};
  innerq_shape shape = {2, H, D, 4096, windows};
  innerq_spec* s = NULL;
  innerq_pool* pool = NULL;
  innerq_seq* seq = NULL;
  CHECK_OK(innerq_spec_parse("innerq", &s));
  CHECK_OK(innerq_pool_create(s, &shape, 0, 0, &pool));
  innerq_spec_free(s);
  CHECK_OK(innerq_seq_create(pool, &seq));
  const int64_t n = 100;
  float* k = malloc(sizeof(float) * n * H * D);
  float* v = malloc(sizeof(float) * n * H * D);
  fill(k, (size_t)n * H * D, 1.0f);
  fill(v, (size_t)n * H * D, 1.0f);
  for (int64_t t = 0; t < n; t += 10) {
    innerq_view kv = innerq_view_packed(k + t * H * D, INNERQ_DTYPE_F32, H, D);
    innerq_view vv = innerq_view_packed(v + t * H * D, INNERQ_DTYPE_F32, H, D);
    CHECK_OK(innerq_append(&seq, 1, 0, &kv, &vv, 10));
  }
  int64_t count = 0, first = 0;
  CHECK_OK(innerq_seq_dequantize(seq, 0, NULL, NULL, &count, &first));
  CHECK(count == 48 && first == 52);
  float* kd = malloc(sizeof(float) * H * 48 * D);
  float* vd = malloc(sizeof(float) * H * 48 * D);
  innerq_view kdv = innerq_view_packed(kd, INNERQ_DTYPE_F32, 48, D);
  innerq_view vdv = innerq_view_packed(vd, INNERQ_DTYPE_F32, 48, D);
  CHECK_OK(innerq_seq_dequantize(seq, 0, &kdv, &vdv, &count, &first));
  /* [H][48][D], f16 of the appended rows 52..99, and the reference over them. */
  double worst = 0.0;
  float* kt = malloc(sizeof(float) * H * 48 * D);
  float* vt = malloc(sizeof(float) * H * 48 * D);
  for (int h = 0; h < H; ++h)
    for (int t = 0; t < 48; ++t)
      for (int c = 0; c < D; ++c) {
        const float want = k[((52 + t) * H + h) * D + c];
        worst = fmax(worst, fabs(kd[(h * 48 + t) * D + c] - want) / fmax(fabs(want), 1e-3));
        kt[(h * 48 + t) * D + c] = kd[(h * 48 + t) * D + c];
        vt[(h * 48 + t) * D + c] = vd[(h * 48 + t) * D + c];
      }
  CHECK(worst <= 1.0 / 2048); /* one f16 rounding */
  float q[NQ * D], out[NQ * D];
  double want[NQ * D];
  fill(q, NQ * D, 0.5f);
  innerq_view qv = innerq_view_packed(q, INNERQ_DTYPE_F32, NQ, D);
  innerq_view ov = innerq_view_packed(out, INNERQ_DTYPE_F32, NQ, D);
  CHECK_OK(innerq_attend(&seq, 1, 0, &qv, NQ, 0.0f, &ov));
  reference_attention(kt, vt, 48, q, 1.0 / sqrt((double)D), want);
  CHECK(max_error(out, want, NQ * D) < 1e-5);
  CHECK_STATUS(innerq_attend_chunk(seq, 0, &qv, 1, NQ, 90, 0.0f, &ov), INNERQ_ERROR_UNSUPPORTED,
               "sliding-window");
  innerq_seq_free(seq);
  innerq_pool_free(pool);
  free(k);
  free(v);
  free(kd);
  free(vd);
  free(kt);
  free(vt);
}

/* ---------------------------------------------------------------------------
 * Models
 * ------------------------------------------------------------------------- */
static void test_model(const char* path) {
  innerq_model* m = NULL;
  CHECK_STATUS(innerq_model_load("/nonexistent/model.gguf", &m), INNERQ_ERROR_IO,
               "/nonexistent/model.gguf");
  CHECK(m == NULL);
  CHECK_OK(innerq_model_load(path, &m));
  if (m == NULL) return;
  innerq_model_info info;
  CHECK_OK(innerq_model_info_get(m, &info));
  CHECK(strcmp(info.arch, "llama") == 0);
  CHECK(info.n_layers == 5 && info.n_heads == 8 && info.n_kv_heads == 4 && info.head_dim == 8);
  CHECK(info.n_vocab == 512 && info.n_params > 0 && info.n_window_layers == 0);

  const char* text = "Once upon a time, there was a little girl";
  int64_t n = 0;
  CHECK_STATUS(innerq_tokenize(m, text, strlen(text), 1, 0, NULL, 0, &n),
               INNERQ_ERROR_BUFFER_TOO_SMALL, "tokens");
  CHECK(n > 5);
  int32_t tokens[256];
  CHECK_OK(innerq_tokenize(m, text, strlen(text), 1, 0, tokens, 256, &n));
  CHECK(tokens[0] == info.bos);
  char buf[512];
  size_t len = 0;
  CHECK_OK(innerq_detokenize(m, tokens, n, buf, sizeof buf, &len));
  CHECK(strcmp(buf, text) == 0 && len == strlen(text));
  CHECK_STATUS(innerq_detokenize(m, tokens, n, buf, 3, &len), INNERQ_ERROR_BUFFER_TOO_SMALL,
               "needs");
  int32_t bad_token = 512;
  CHECK_STATUS(innerq_detokenize(m, &bad_token, 1, buf, sizeof buf, &len),
               INNERQ_ERROR_INVALID_ARGUMENT, "512");
  CHECK_STATUS(innerq_chat_turn(m, "hi", NULL, 1, buf, sizeof buf, &len), INNERQ_ERROR_UNSUPPORTED,
               "chat template");
  CHECK(innerq_token_ends_generation(m, info.eos) == 1);
  CHECK(innerq_token_ends_generation(m, tokens[1]) == 0);
  CHECK(innerq_token_ends_generation(m, -3) == 0);

  innerq_shape shape;
  CHECK_OK(innerq_model_shape(m, 128, &shape));
  CHECK(shape.n_layers == 5 && shape.n_kv_heads == 4 && shape.head_dim == 8 &&
        shape.max_tokens == 128 && shape.window == NULL);
  innerq_spec* s = NULL;
  CHECK_OK(innerq_spec_parse("f32", &s));
  innerq_pool* pool = NULL;
  CHECK_OK(innerq_pool_create(s, &shape, 0, 0, &pool));
  innerq_seq *a = NULL, *b = NULL;
  CHECK_OK(innerq_seq_create(pool, &a));
  CHECK_OK(innerq_seq_create(pool, &b));

  /* Prefill all n tokens of a (all logits) vs prefill n-1 then decode the
   * last of b: the same last-position logits within f32 reordering. */
  float* all = malloc(sizeof(float) * (size_t)n * 512);
  float last[2 * 512], decoded[2 * 512];
  CHECK_OK(innerq_model_extend(m, &a, 1, tokens, n, 1, all));
  CHECK_OK(innerq_model_extend(m, &b, 1, tokens, n - 1, 0, last));
  CHECK_OK(innerq_model_decode(m, &b, &tokens[n - 1], 1, decoded));
  double err = 0.0, mag = 0.0;
  for (int i = 0; i < 512; ++i) {
    err = fmax(err, fabs(decoded[i] - all[(n - 1) * 512 + i]));
    mag = fmax(mag, fabs(all[(n - 1) * 512 + i]));
  }
  CHECK(err <= 1e-4 * mag);
  /* Extend of a held sequence, and batched decode of both. */
  int32_t next[2] = {tokens[1], tokens[2]};
  CHECK_OK(innerq_model_extend(m, &a, 1, next, 2, 0, last));
  innerq_seq* both[2] = {a, b};
  CHECK_OK(innerq_model_decode(m, both, next, 2, decoded));
  CHECK(innerq_seq_n_tokens(a) == n + 3 && innerq_seq_n_tokens(b) == n + 1);
  /* Several sequences, of different specs, through one extend: prefilled
   * together, each gets the same logits as alone (f32 vs f16 caches differ
   * only by f16 rounding of K/V). A call mixing empty and held sequences is
   * refused. */
  innerq_spec* s16 = NULL;
  innerq_pool* pool16 = NULL;
  innerq_seq *c = NULL, *d = NULL;
  CHECK_OK(innerq_spec_parse("f16", &s16));
  CHECK_OK(innerq_pool_create(s16, &shape, 0, 0, &pool16));
  CHECK_OK(innerq_seq_create(pool, &c));
  CHECK_OK(innerq_seq_create(pool16, &d));
  innerq_seq* cd[2] = {c, d};
  innerq_seq* e = NULL;
  float two[2 * 512], alone[512];
  CHECK_OK(innerq_seq_create(pool, &e));
  CHECK_OK(innerq_model_extend(m, &e, 1, tokens, n, 0, alone));
  innerq_seq_free(e);
  CHECK_OK(innerq_model_extend(m, cd, 2, tokens, n, 0, two));
  CHECK(memcmp(two, alone, sizeof alone) == 0);
  CHECK(memcmp(two, two + 512, sizeof(float) * 512) == 0); /* prefill: one set of logits */
  float two_all[2 * 2 * 512];
  CHECK_OK(innerq_model_extend(m, cd, 2, next, 2, 1, two_all));
  double diff = 0.0;
  for (int i = 0; i < 2 * 512; ++i) diff = fmax(diff, fabs(two_all[i] - two_all[2 * 512 + i]));
  CHECK(diff > 0.0 && diff < 0.05 * mag);
  innerq_seq_free(d);
  CHECK_OK(innerq_seq_create(pool16, &d));
  cd[1] = d;
  CHECK_STATUS(innerq_model_extend(m, cd, 2, next, 1, 0, NULL), INNERQ_ERROR_INVALID_ARGUMENT,
               "not both");
  innerq_seq_free(c);
  innerq_seq_free(d);
  innerq_pool_free(pool16);
  innerq_spec_free(s16);
  CHECK(innerq_model_scratch_bytes(m) > 0);
  innerq_model_release_scratch(m);
  CHECK(innerq_model_scratch_bytes(m) == 0);
  CHECK_OK(innerq_model_decode(m, both, next, 2, decoded)); /* works after release */

  /* Greedy sampling picks the argmax; seeded sampling is reproducible. */
  innerq_sampler_params sp = innerq_sampler_default_params();
  innerq_sampler* greedy = NULL;
  CHECK_OK(innerq_sampler_create(&sp, &greedy));
  int32_t tok = -1;
  CHECK_OK(innerq_sample(greedy, decoded, 512, &tok));
  int best = 0;
  for (int i = 1; i < 512; ++i)
    if (decoded[i] > decoded[best]) best = i;
  CHECK(tok == best);
  sp.temperature = 0.8f;
  sp.seed = 7;
  innerq_sampler *r1 = NULL, *r2 = NULL;
  CHECK_OK(innerq_sampler_create(&sp, &r1));
  CHECK_OK(innerq_sampler_create(&sp, &r2));
  int32_t t1, t2;
  for (int i = 0; i < 5; ++i) {
    CHECK_OK(innerq_sample(r1, decoded, 512, &t1));
    CHECK_OK(innerq_sample(r2, decoded, 512, &t2));
    CHECK(t1 == t2 && t1 >= 0 && t1 < 512);
  }
  sp.temperature = -1.0f;
  innerq_sampler* bad_sampler = NULL;
  CHECK_STATUS(innerq_sampler_create(&sp, &bad_sampler), INNERQ_ERROR_INVALID_ARGUMENT,
               "temperature");
  sp.temperature = NAN;
  CHECK_STATUS(innerq_sampler_create(&sp, &bad_sampler), INNERQ_ERROR_INVALID_ARGUMENT, "finite");
  decoded[3] = NAN;
  CHECK_STATUS(innerq_sample(greedy, decoded, 512, &tok), INNERQ_ERROR_INVALID_ARGUMENT,
               "logits[3]");

  /* Refusals: bad tokens, a full sequence, a pool of another shape. */
  int32_t oov = 600;
  CHECK_STATUS(innerq_model_extend(m, &a, 1, &oov, 1, 0, last), INNERQ_ERROR_INVALID_ARGUMENT,
               "600");
  CHECK_STATUS(innerq_model_decode(m, both, next, 0, decoded), INNERQ_ERROR_INVALID_ARGUMENT,
               "n_seqs 0");
  int32_t many[200] = {0};
  CHECK_STATUS(innerq_model_extend(m, &a, 1, many, 200, 0, NULL), INNERQ_ERROR_INVALID_ARGUMENT,
               "room left");
  innerq_shape wrong = {2, 2, 64, 128, NULL};
  innerq_pool* other = NULL;
  innerq_seq* w = NULL;
  CHECK_OK(innerq_pool_create(s, &wrong, 0, 0, &other));
  CHECK_OK(innerq_seq_create(other, &w));
  CHECK_STATUS(innerq_model_extend(m, &w, 1, tokens, 2, 0, NULL), INNERQ_ERROR_INVALID_ARGUMENT,
               "innerq_model_shape");
  CHECK_STATUS(innerq_model_shape(m, 0, &shape), INNERQ_ERROR_INVALID_ARGUMENT, "max_tokens 0");
  CHECK_STATUS(innerq_model_info_get(NULL, &info), INNERQ_ERROR_INVALID_ARGUMENT, "model is NULL");

  innerq_seq_free(w);
  innerq_pool_free(other);
  innerq_sampler_free(greedy);
  innerq_sampler_free(r1);
  innerq_sampler_free(r2);
  innerq_sampler_free(NULL);
  innerq_seq_free(a);
  innerq_seq_free(b);
  innerq_pool_free(pool);
  innerq_spec_free(s);
  innerq_model_free(m);
  innerq_model_free(NULL);
  free(all);
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s MODEL.gguf TMPDIR\n", argv[0]);
    return 2;
  }
  test_version_and_capabilities();
  test_specs();
  test_plans();
  test_f32_attention_and_strides();
  test_every_kind();
  test_chunk_attention();
  test_sequence_operations(argv[2]);
  test_fixed_pool();
  test_batch_is_all_or_nothing();
  test_window_layer();
  test_model(argv[1]);
  printf("capi_test: %d checks, %d failed\n", checks, failures);
  return failures == 0 ? 0 : 1;
}
