// AES-256-GCM open and seal in one call each, through the OpenSSL that the node binary itself
// exports. node:crypto builds a Cipheriv object and crosses into C++ four or five times per value;
// here each value is one call on a context reused by the thread (one per Node environment).
#define NAPI_VERSION 8
#include <node_api.h>
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define KEY_BYTES 32
#define IV_BYTES 12
#define TAG_BYTES 16
// Far above any field value; keeps every length, and a length plus the tag, inside an int.
#define MAX_INPUT_BYTES (1 << 30)

// Each context keeps the last call's AES key schedule and GHASH key until the next call replaces
// them. Not wiped after each call, because it is not worth its cost: measured on 1M opens of a
// 32-byte value (issue 10, 2026-12-06), EVP_CIPHER_CTX_reset and a re-init after each call cost
// +60% instructions per call (callgrind: 6,040 -> 9,690, the whole call from JavaScript) and
// re-keying with an all-zero key +23% (7,440), against the ~5% it would have been worth. The
// schedule guards no more than the key itself: the keyring holds that key, unwrapped, in the same
// process for as long as it is cached (src/crypto/keys/keyring.ts); what outlives the cache is one
// schedule per thread, of the last key used, until the next value.
//
// The open context also keeps which key its schedule is of (`open_key`, a copy of that key, under
// the same reasoning), so that a value under the key of the value before it sets only its IV: a
// patient's values are opened one after another under one key, and setting the key costs about a
// fifth of a call's instructions (callgrind: 5,630 -> 4,480 a value of 19 bytes under a key
// used before; 5,550 -> 5,670 under a key that changes every value; bench/README.md, branch page20).
typedef struct {
  EVP_CIPHER_CTX *open, *seal;
  unsigned char open_key[KEY_BYTES];
  int open_keyed;
} contexts;
typedef struct { unsigned char *data; size_t length; } bytes;

static void free_contexts(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  contexts *c = data;
  OPENSSL_cleanse(c->open_key, KEY_BYTES);
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

// Whether two keys are equal, in time that does not depend on where they differ. CRYPTO_memcmp
// compares byte by byte (~230 instructions for 32 bytes); four words do the same in a tenth.
static int same_key(const unsigned char *a, const unsigned char *b) {
  uint64_t x, y, differ = 0;
  for (size_t i = 0; i < KEY_BYTES; i += sizeof x) {
    memcpy(&x, a + i, sizeof x);
    memcpy(&y, b + i, sizeof y);
    differ |= x ^ y;
  }
  return differ == 0;
}

// Readies the open context for a value under `key` with `iv`: the key is set only when it is not
// the one the context holds. A failed set forgets the key, so the next call sets it again.
static int open_init(contexts *c, const unsigned char *key, const unsigned char *iv) {
  int same = c->open_keyed && same_key(c->open_key, key);
  if (EVP_DecryptInit_ex(c->open, NULL, NULL, same ? NULL : key, iv) != 1) {
    c->open_keyed = 0;
    OPENSSL_cleanse(c->open_key, KEY_BYTES);
    return 0;
  }
  if (!same) {
    memcpy(c->open_key, key, KEY_BYTES);
    c->open_keyed = 1;
  }
  return 1;
}

// The output must be long enough and must not overlap an input: OpenSSL allows only exact aliasing.
static int get_output(napi_env env, napi_value value, size_t needed, const bytes *inputs, size_t count, bytes *out) {
  if (!get_bytes(env, value, 0, out)) return 0;
  int ok = out->length >= needed;
  for (size_t i = 0; ok && i < count; i++) {
    const unsigned char *in = inputs[i].data;
    ok = inputs[i].length == 0 || needed == 0 || in + inputs[i].length <= out->data || out->data + needed <= in;
  }
  if (!ok) napi_throw_range_error(env, "ERR_AEAD_LENGTH", "aead: the output is too short or overlaps an input");
  return ok;
}

static napi_value int_value(napi_env env, int32_t n) {
  napi_value v = NULL;
  napi_create_int32(env, n, &v);
  return v;
}

// open(key, iv, aad, ciphertext, tag, out) -> the plaintext's length, written to the start of out;
// -1 when the tag does not verify. Creating a Buffer here costs more than the decryption: the
// caller hands in memory it reuses.
static napi_value open_gcm(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  bytes in[5], out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 6) {
    napi_throw_type_error(env, "ERR_AEAD_ARGUMENT", "aead: open takes 6 arguments");
    return NULL;
  }
  const bytes *key = &in[0], *iv = &in[1], *aad = &in[2], *ct = &in[3], *tag = &in[4];
  if (!get_bytes(env, argv[0], KEY_BYTES, &in[0]) || !get_bytes(env, argv[1], IV_BYTES, &in[1]) || !get_bytes(env, argv[2], 0, &in[2]) ||
      !get_bytes(env, argv[3], 0, &in[3]) || !get_bytes(env, argv[4], TAG_BYTES, &in[4]) || !get_output(env, argv[5], ct->length, in, 5, &out)) return NULL;
  contexts *c = get_contexts(env);
  if (c == NULL) return NULL;
  unsigned char none[TAG_BYTES]; // GCM's final writes nothing; out may be empty (NULL data).
  int n = 0, ok = open_init(c, key->data, iv->data) &&
                  (aad->length == 0 || EVP_DecryptUpdate(c->open, NULL, &n, aad->data, (int)aad->length) == 1) &&
                  (ct->length == 0 || (EVP_DecryptUpdate(c->open, out.data, &n, ct->data, (int)ct->length) == 1 && (size_t)n == ct->length)) &&
                  EVP_CIPHER_CTX_ctrl(c->open, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, tag->data) == 1 &&
                  EVP_DecryptFinal_ex(c->open, none, &n) == 1 && n == 0;
  if (ok) return int_value(env, (int32_t)ct->length);
  // Unauthenticated plaintext never reaches JavaScript: the bytes this call wrote are wiped.
  if (ct->length != 0) OPENSSL_cleanse(out.data, ct->length);
  return int_value(env, -1);
}

// Well-formed UTF-8 as the Unicode standard defines it (Table 3-7): no overlong forms, no
// surrogates, nothing past U+10FFFF, no truncated sequence. What a fatal TextDecoder accepts.
static int well_formed_utf8(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t more;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) more = 1;
    else if (c >= 0xE0 && c <= 0xEF) more = 2, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) more = 3, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return 0;
    if (n - i - 1 < more || s[i + 1] < lo || s[i + 1] > hi) return 0;
    for (size_t k = 2; k <= more; k++)
      if ((s[i + k] & 0xC0) != 0x80) return 0;
    i += more + 1;
  }
  return 1;
}

// Plaintexts up to this size are opened on the stack; larger ones into memory of their own.
#define STACK_PLAIN_BYTES 1024

// openText(key, envelope, nonceAt, aad, aadLength) -> the plaintext as a string, or null when the
// tag does not verify, the plaintext is not well-formed UTF-8, or the key is all zeros (a key the
// keyring has wiped). The envelope is any header, then the 12-byte IV at nonceAt, the ciphertext
// and the 16-byte tag; the AAD is aad's first aadLength bytes. One call per value and no Buffer:
// slicing the envelope and decoding in JavaScript cost more than the decryption. The plaintext
// bytes exist only in memory this call wipes before it returns.
static napi_value open_text(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  bytes key, envelope, aad;
  uint32_t nonce_at = 0, aad_length = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5) {
    napi_throw_type_error(env, "ERR_AEAD_ARGUMENT", "aead: openText takes 5 arguments");
    return NULL;
  }
  if (!get_bytes(env, argv[0], KEY_BYTES, &key) || !get_bytes(env, argv[1], 0, &envelope) || !get_bytes(env, argv[3], 0, &aad)) return NULL;
  if (napi_get_value_uint32(env, argv[2], &nonce_at) != napi_ok || napi_get_value_uint32(env, argv[4], &aad_length) != napi_ok) {
    napi_throw_type_error(env, "ERR_AEAD_ARGUMENT", "aead: expected an offset and a length");
    return NULL;
  }
  if (envelope.length < (size_t)IV_BYTES + TAG_BYTES || nonce_at > envelope.length - IV_BYTES - TAG_BYTES || aad_length > aad.length) {
    napi_throw_range_error(env, "ERR_AEAD_LENGTH", "aead: argument has the wrong length");
    return NULL;
  }
  contexts *c = get_contexts(env);
  if (c == NULL) return NULL;
  napi_value result = NULL;
  napi_get_null(env, &result);
  unsigned char any = 0;
  for (size_t i = 0; i < KEY_BYTES; i++) any |= key.data[i];
  if (any == 0) return result;
  const unsigned char *iv = envelope.data + nonce_at, *ct = iv + IV_BYTES;
  size_t ct_length = envelope.length - nonce_at - IV_BYTES - TAG_BYTES;
  const unsigned char *tag = ct + ct_length;
  unsigned char on_stack[STACK_PLAIN_BYTES];
  unsigned char *plain = ct_length <= STACK_PLAIN_BYTES ? on_stack : malloc(ct_length);
  if (plain == NULL) {
    napi_throw_error(env, "ERR_AEAD_STATE", "aead: out of memory");
    return NULL;
  }
  unsigned char none[TAG_BYTES];
  int n = 0, ok = open_init(c, key.data, iv) &&
                  (aad_length == 0 || EVP_DecryptUpdate(c->open, NULL, &n, aad.data, (int)aad_length) == 1) &&
                  (ct_length == 0 || (EVP_DecryptUpdate(c->open, plain, &n, ct, (int)ct_length) == 1 && (size_t)n == ct_length)) &&
                  EVP_CIPHER_CTX_ctrl(c->open, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, (void *)tag) == 1 &&
                  EVP_DecryptFinal_ex(c->open, none, &n) == 1 && n == 0 && well_formed_utf8(plain, ct_length);
  napi_status status = ok ? napi_create_string_utf8(env, (const char *)plain, ct_length, &result) : napi_ok;
  OPENSSL_cleanse(plain, ct_length);
  if (plain != on_stack) free(plain);
  if (status != napi_ok) {
    napi_throw_error(env, "ERR_AEAD_STATE", "aead: the string could not be made");
    return NULL;
  }
  return result;
}

// seal(key, iv, aad, plaintext, out) -> writes the ciphertext and then the 16-byte tag to the start of out.
static napi_value seal_gcm(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  bytes in[4], out;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 5) {
    napi_throw_type_error(env, "ERR_AEAD_ARGUMENT", "aead: seal takes 5 arguments");
    return NULL;
  }
  const bytes *key = &in[0], *iv = &in[1], *aad = &in[2], *pt = &in[3];
  if (!get_bytes(env, argv[0], KEY_BYTES, &in[0]) || !get_bytes(env, argv[1], IV_BYTES, &in[1]) || !get_bytes(env, argv[2], 0, &in[2]) ||
      !get_bytes(env, argv[3], 0, &in[3]) || !get_output(env, argv[4], pt->length + TAG_BYTES, in, 4, &out)) return NULL;
  contexts *c = get_contexts(env);
  if (c == NULL) return NULL;
  int n = 0, ok = EVP_EncryptInit_ex(c->seal, NULL, NULL, key->data, iv->data) == 1 &&
                  (aad->length == 0 || EVP_EncryptUpdate(c->seal, NULL, &n, aad->data, (int)aad->length) == 1) &&
                  (pt->length == 0 || (EVP_EncryptUpdate(c->seal, out.data, &n, pt->data, (int)pt->length) == 1 && (size_t)n == pt->length)) &&
                  EVP_EncryptFinal_ex(c->seal, out.data + pt->length, &n) == 1 && n == 0 &&
                  EVP_CIPHER_CTX_ctrl(c->seal, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, out.data + pt->length) == 1;
  if (ok) return int_value(env, (int32_t)(pt->length + TAG_BYTES));
  OPENSSL_cleanse(out.data, pt->length + TAG_BYTES);
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
    {"openText", NULL, open_text, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, 3, props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
