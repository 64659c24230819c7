// The avx2 kernel variant (target flags come from binding.gyp).
#define LLAVA_VARIANT v_avx2
#include "impl/variant.h"
