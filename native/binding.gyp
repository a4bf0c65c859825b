{
  "targets": [
    {
      "target_name": "moat_native",
      "sources": ["src/addon.c", "src/stamp.c", "src/install.c", "src/install_addon.c", "src/transport.c", "src/keystore.c", "src/harden.c", "src/curl_api.c", "src/literal_scan.c", "src/json_object.c", "src/crypto_api.c"],
      "include_dirs": ["src", "src/generated"],
      "defines": ["NAPI_VERSION=8", "_GNU_SOURCE"],
      "cflags_c": ["-std=c99", "-O2", "-Wall", "-Wextra", "-fvisibility=hidden", "-D_FORTIFY_SOURCE=2", "-fstack-protector-strong"],
      "libraries": ["-lpthread", "-ldl"],
      "ldflags": ["-Wl,-z,relro,-z,now", "-s"],
      "conditions": [
        ["OS=='mac'", {"libraries": ["-lcrypto", "-framework Security", "-framework CoreFoundation"]}]
      ]
    }
  ]
}
