// AES-256-GCM open and seal in one call each, through the OpenSSL that the node binary itself
// exports. node:crypto builds a Cipheriv object and crosses into C++ four or five times per value;
// here each value is one call on a context reused by the thread (one per Node environment).
#define NAPI_VERSION 8
#include <node_api.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <stddef.h>
#include <stdlib.h>

#define KEY_BYTES 32
#define IV_BYTES 12
#define TAG_BYTES 16
// Field values and their AAD are small; the bound keeps every length well inside an int.
#define MAX_INPUT_BYTES (16 * 1024 * 1024)

typedef struct {
  EVP_CIPHER_CTX *open;
  EVP_CIPHER_CTX *seal;
} contexts;

typedef struct {
  unsigned char *data;
  size_t length;
} bytes;

static void free_contexts(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  contexts *c = data;
  EVP_CIPHER_CTX_free(c->open);
  EVP_CIPHER_CTX_free(c->seal);
  free(c);
}

// Arguments must be Buffers (or other Uint8Arrays) of the expected length; anything else is a
// TypeError and nothing is done.
static int get_bytes(napi_env env, napi_value value, size_t exact, bytes *out) {
  napi_typedarray_type type;
  void *data;
  if (napi_get_typedarray_info(env, value, &type, &out->length, &data, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, "ERR_AEAD_ARGUMENT", "aead: expected a Uint8Array");
    return 0;
  }
  out->data = data;
  if ((exact != 0 && out->length != exact) || out->length > MAX_INPUT_BYTES) {
    napi_throw_range_error(env, "ERR_AEAD_LENGTH", "aead: argument has the wrong length");
    return 0;
  }
  return 1;
}

static contexts *get_contexts(napi_env env) {
  contexts *c = NULL;
  if (napi_get_instance_data(env, (void **)&c) != napi_ok || c == NULL) napi_throw_error(env, "ERR_AEAD_STATE", "aead: not initialised");
  return c;
}

// open(key, iv, aad, ciphertext, tag) -> plaintext Buffer, or null when the tag does not verify.
static napi_value open_gcm(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], result = NULL;
  bytes key, iv, aad, ct, tag;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5) {
    napi_throw_type_error(env, "ERR_AEAD_ARGUMENT", "aead: open takes 5 arguments");
    return NULL;
  }
  if (!get_bytes(env, argv[0], KEY_BYTES, &key) || !get_bytes(env, argv[1], IV_BYTES, &iv) || !get_bytes(env, argv[2], 0, &aad) ||
      !get_bytes(env, argv[3], 0, &ct) || !get_bytes(env, argv[4], TAG_BYTES, &tag)) return NULL;
  contexts *c = get_contexts(env);
  if (c == NULL) return NULL;
  void *out;
  napi_value buffer;
  if (napi_create_buffer(env, ct.length, &out, &buffer) != napi_ok) return NULL;
  int n = 0, ok = EVP_DecryptInit_ex(c->open, NULL, NULL, key.data, iv.data) == 1 &&
                  (aad.length == 0 || EVP_DecryptUpdate(c->open, NULL, &n, aad.data, (int)aad.length) == 1) &&
                  (ct.length == 0 || (EVP_DecryptUpdate(c->open, out, &n, ct.data, (int)ct.length) == 1 && (size_t)n == ct.length)) &&
                  EVP_CIPHER_CTX_ctrl(c->open, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag.data) == 1 &&
                  EVP_DecryptFinal_ex(c->open, (unsigned char *)out + ct.length, &n) == 1 && n == 0;
  if (ok) return buffer;
  // Unauthenticated plaintext never reaches JavaScript: the buffer is wiped and dropped.
  if (ct.length != 0) OPENSSL_cleanse(out, ct.length);
  napi_get_null(env, &result);
  return result;
}

// seal(key, iv, aad, plaintext) -> ciphertext followed by the 16-byte tag.
static napi_value seal_gcm(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  bytes key, iv, aad, pt;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4) {
    napi_throw_type_error(env, "ERR_AEAD_ARGUMENT", "aead: seal takes 4 arguments");
    return NULL;
  }
  if (!get_bytes(env, argv[0], KEY_BYTES, &key) || !get_bytes(env, argv[1], IV_BYTES, &iv) || !get_bytes(env, argv[2], 0, &aad) ||
      !get_bytes(env, argv[3], 0, &pt)) return NULL;
  contexts *c = get_contexts(env);
  if (c == NULL) return NULL;
  void *out;
  napi_value buffer;
  if (napi_create_buffer(env, pt.length + TAG_BYTES, &out, &buffer) != napi_ok) return NULL;
  int n = 0, ok = EVP_EncryptInit_ex(c->seal, NULL, NULL, key.data, iv.data) == 1 &&
                  (aad.length == 0 || EVP_EncryptUpdate(c->seal, NULL, &n, aad.data, (int)aad.length) == 1) &&
                  (pt.length == 0 || (EVP_EncryptUpdate(c->seal, out, &n, pt.data, (int)pt.length) == 1 && (size_t)n == pt.length)) &&
                  EVP_EncryptFinal_ex(c->seal, (unsigned char *)out + pt.length, &n) == 1 && n == 0 &&
                  EVP_CIPHER_CTX_ctrl(c->seal, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, (unsigned char *)out + pt.length) == 1;
  if (ok) return buffer;
  napi_throw_error(env, "ERR_AEAD_SEAL", "aead: encryption failed");
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  contexts *c = calloc(1, sizeof *c);
  if (c == NULL) {
    napi_throw_error(env, "ERR_AEAD_STATE", "aead: out of memory");
    return NULL;
  }
  c->open = EVP_CIPHER_CTX_new();
  c->seal = EVP_CIPHER_CTX_new();
  // The cipher is bound once here; each call then sets only the key and the IV (12 bytes, GCM's default).
  if (c->open == NULL || c->seal == NULL || EVP_DecryptInit_ex(c->open, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
      EVP_EncryptInit_ex(c->seal, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
      napi_set_instance_data(env, c, free_contexts, NULL) != napi_ok) {
    free_contexts(env, c, NULL);
    napi_throw_error(env, "ERR_AEAD_STATE", "aead: OpenSSL context unavailable");
    return NULL;
  }
  napi_property_descriptor props[] = {
    {"open", NULL, open_gcm, NULL, NULL, NULL, napi_enumerable, NULL},
    {"seal", NULL, seal_gcm, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, 2, props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
