{
  "targets": [
    {
      "target_name": "tenguard_native",
      "sources": [
        "native/addon.c",
        "native/busypoll.c",
        "native/wake.c",
        "native/aead.c",
        "native/coalesce.c",
        "native/crypto_pool.c",
        "native/endpoint.c",
        "native/io.c",
        "native/process.c",
        "native/secret.c",
        "native/slab.c",
        "native/tun.c",
        "native/udp.c",
        "native/util.c"
      ],
      "defines": ["_GNU_SOURCE", "NAPI_VERSION=8"],
      "cflags_c": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fvisibility=hidden"],
      "libraries": []
    }
  ]
}
