{
  "targets": [
    {
      "target_name": "aead",
      "sources": ["aead.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror", "-O2"]
    }
  ]
}
