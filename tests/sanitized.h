// tests/sanitized.h — whether this test binary runs under AddressSanitizer.
// The heaviest sweeps take a sparser sample there (the sanitizer run repeats
// the default suite to find memory errors, and every boundary the sweeps aim
// at stays in the sample); resident-memory checks skip, since the shadow
// memory is resident too.
#pragma once

namespace innerq::testing_env {

#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

}  // namespace innerq::testing_env
