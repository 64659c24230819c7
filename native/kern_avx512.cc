// The avx512 kernel variant (target flags come from binding.gyp).
#define LLAVA_VARIANT v_avx512
#define LLAVA_FILL fill_avx512
#include "impl/variant.h"
