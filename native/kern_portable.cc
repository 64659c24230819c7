// The portable kernel variant (target flags come from binding.gyp).
#define LLAVA_VARIANT v_portable
#define LLAVA_FILL fill_portable
#include "impl/variant.h"
