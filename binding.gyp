{
  "targets": [
    {
      "target_name": "weft_native",
      "sources": ["native/weft_native.cc", "native/udp_pump.cc"],
      "cflags_cc": ["-std=c++17", "-Wall", "-Wextra", "-Werror", "-fno-exceptions"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
