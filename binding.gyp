{
  # The native CPU backend. Kernel variants are compiled from one source with different target
  # flags and chosen at run time (native/dispatch.cc); never -march=native, so the binary runs
  # on any machine of its architecture. On non-x86 only the portable variant is built.
  "target_defaults": {
    "cflags_cc": ["-O3", "-std=gnu++17", "-fPIC", "-Wno-psabi", "-Wno-maybe-uninitialized", "-fno-math-errno"],
    "cflags_cc!": ["-O2", "-Os"]
  },
  "targets": [
    {
      "target_name": "llava_native",
      "sources": [
        "native/addon.cc",
        "native/pool.cc",
        "native/dispatch.cc",
        "native/kern_portable.cc"
      ],
      "conditions": [
        ["target_arch=='x64'", {
          "defines": ["LLAVA_X86"],
          "dependencies": ["llava_kern_avx2", "llava_kern_avx512", "llava_kern_avx512bf16"]
        }]
      ],
      "dependencies": ["llava_quantize"]
    },
    {
      # llama.cpp's quantizers, rounded exactly as its C reference: no fused multiply-adds
      "target_name": "llava_quantize",
      "type": "static_library",
      "sources": ["native/quantize.cc"],
      "cflags_cc": ["-ffp-contract=off"]
    }
  ],
  "conditions": [
    ["target_arch=='x64'", {
      "targets": [
        {
          "target_name": "llava_kern_avx2",
          "type": "static_library",
          "defines": ["LLAVA_X86"],
          "sources": ["native/kern_avx2.cc"],
          "cflags_cc": ["-mavx2", "-mfma", "-mf16c"]
        },
        {
          "target_name": "llava_kern_avx512",
          "type": "static_library",
          "defines": ["LLAVA_X86"],
          "sources": ["native/kern_avx512.cc"],
          "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mf16c"]
        },
        {
          "target_name": "llava_kern_avx512bf16",
          "type": "static_library",
          "defines": ["LLAVA_X86"],
          "sources": ["native/kern_avx512bf16.cc"],
          "cflags_cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512bf16", "-mavx2", "-mfma", "-mf16c"]
        }
      ]
    }]
  ]
}
