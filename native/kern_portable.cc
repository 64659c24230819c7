// The portable kernel variant (target flags come from binding.gyp).
#define LLAVA_VARIANT v_portable
#include "impl/variant.h"
