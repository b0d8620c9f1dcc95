/*
 * gpudc lab: a simulated NVIDIA Management Library (libnvidia-ml.so.1).
 *
 * Compiled against the real nvml.h (PyPI nvidia-nvml-dev) so that every exported function has
 * NVML's exact prototype and struct layout, and the unmodified nvidia-ml-py bindings (pynvml)
 * work against it.  The simulated GPUs come from one JSON state file read at nvmlInit:
 *   $GPUDC_LAB_NVML_STATE, default /etc/gpudc-lab/nvml-state.json
 * See README.md next to this file for the state keys and which calls read them.
 *
 * Conventions: a key that is missing or null means the device does not support the query
 * (NVML_ERROR_NOT_SUPPORTED), as real NVML does for a feature a board lacks.
 */
#define _GNU_SOURCE
#define NVML_NO_UNVERSIONED_FUNC_DEFS
#include "nvml.h"

#include <ctype.h>
#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#define SIM_DEFAULT_STATE "/etc/gpudc-lab/nvml-state.json"
#define SIM_MAX_GPUS 64
#define SIM_MAX_DEPTH 64

/* ------------------------------------------------------------------------------------------ */
/* A small JSON parser (RFC 8259 values; UTF-8 passthrough; \uXXXX incl. surrogate pairs).    */
/* ------------------------------------------------------------------------------------------ */

typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jtype;

typedef struct jv {
    jtype t;
    double num;
    int b;
    char *str;
    struct jv **items; /* array items or object values */
    char **keys;       /* object keys */
    int n;
} jv;

typedef struct {
    const char *s;
    size_t pos;
    size_t len;
    char err[160];
} jparser;

static void jfree(jv *v) {
    int i;
    if (!v) return;
    for (i = 0; i < v->n; i++) {
        jfree(v->items[i]);
        if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
    free(v->str);
    free(v);
}

static void jskip(jparser *p) {
    while (p->pos < p->len && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t' || p->s[p->pos] == '\n' ||
                               p->s[p->pos] == '\r'))
        p->pos++;
}

static jv *jfail(jparser *p, const char *msg) {
    if (!p->err[0]) snprintf(p->err, sizeof p->err, "%s at byte %zu", msg, p->pos);
    return NULL;
}

static jv *jnew(jtype t) {
    jv *v = calloc(1, sizeof *v);
    if (v) v->t = t;
    return v;
}

static int jpush(jv *v, char *key, jv *item) {
    jv **items = realloc(v->items, sizeof(jv *) * (size_t)(v->n + 1));
    if (!items) return 0;
    v->items = items;
    if (v->t == J_OBJ) {
        char **keys = realloc(v->keys, sizeof(char *) * (size_t)(v->n + 1));
        if (!keys) return 0;
        v->keys = keys;
        v->keys[v->n] = key;
    }
    v->items[v->n++] = item;
    return 1;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static int jhex4(jparser *p, unsigned *out) {
    unsigned v = 0;
    int i;
    if (p->pos + 4 > p->len) return 0;
    for (i = 0; i < 4; i++) {
        int h = hexval(p->s[p->pos + (size_t)i]);
        if (h < 0) return 0;
        v = (v << 4) | (unsigned)h;
    }
    p->pos += 4;
    *out = v;
    return 1;
}

static char *jstring_raw(jparser *p) {
    size_t cap = 32, n = 0;
    char *out;
    if (p->pos >= p->len || p->s[p->pos] != '"') {
        jfail(p, "expected string");
        return NULL;
    }
    p->pos++;
    out = malloc(cap);
    if (!out) return NULL;
    while (p->pos < p->len) {
        unsigned char c = (unsigned char)p->s[p->pos++];
        char buf[4];
        size_t k = 0;
        if (c == '"') {
            out[n] = 0;
            return out;
        }
        if (c < 0x20) {
            free(out);
            jfail(p, "control character in string");
            return NULL;
        }
        if (c == '\\') {
            char e;
            if (p->pos >= p->len) break;
            e = p->s[p->pos++];
            switch (e) {
            case '"': buf[k++] = '"'; break;
            case '\\': buf[k++] = '\\'; break;
            case '/': buf[k++] = '/'; break;
            case 'b': buf[k++] = '\b'; break;
            case 'f': buf[k++] = '\f'; break;
            case 'n': buf[k++] = '\n'; break;
            case 'r': buf[k++] = '\r'; break;
            case 't': buf[k++] = '\t'; break;
            case 'u': {
                unsigned cp, lo;
                if (!jhex4(p, &cp)) {
                    free(out);
                    jfail(p, "bad \\u escape");
                    return NULL;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF && p->pos + 6 <= p->len && p->s[p->pos] == '\\' &&
                    p->s[p->pos + 1] == 'u') {
                    p->pos += 2;
                    if (!jhex4(p, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                        free(out);
                        jfail(p, "bad surrogate pair");
                        return NULL;
                    }
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                if (cp < 0x80) {
                    buf[k++] = (char)cp;
                } else if (cp < 0x800) {
                    buf[k++] = (char)(0xC0 | (cp >> 6));
                    buf[k++] = (char)(0x80 | (cp & 0x3F));
                } else if (cp < 0x10000) {
                    buf[k++] = (char)(0xE0 | (cp >> 12));
                    buf[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    buf[k++] = (char)(0x80 | (cp & 0x3F));
                } else {
                    buf[k++] = (char)(0xF0 | (cp >> 18));
                    buf[k++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                    buf[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                    buf[k++] = (char)(0x80 | (cp & 0x3F));
                }
                break;
            }
            default:
                free(out);
                jfail(p, "bad escape");
                return NULL;
            }
        } else {
            buf[k++] = (char)c;
        }
        if (n + k + 1 > cap) {
            char *grown;
            cap = (n + k + 1) * 2;
            grown = realloc(out, cap);
            if (!grown) {
                free(out);
                return NULL;
            }
            out = grown;
        }
        memcpy(out + n, buf, k);
        n += k;
    }
    free(out);
    jfail(p, "unterminated string");
    return NULL;
}

static jv *jvalue(jparser *p, int depth);

static jv *jcontainer(jparser *p, int depth, int is_obj) {
    jv *v = jnew(is_obj ? J_OBJ : J_ARR);
    char close = is_obj ? '}' : ']';
    if (!v) return jfail(p, "out of memory");
    p->pos++;
    jskip(p);
    if (p->pos < p->len && p->s[p->pos] == close) {
        p->pos++;
        return v;
    }
    for (;;) {
        char *key = NULL;
        jv *item;
        jskip(p);
        if (is_obj) {
            key = jstring_raw(p);
            if (!key) {
                jfree(v);
                return NULL;
            }
            jskip(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') {
                free(key);
                jfree(v);
                return jfail(p, "expected ':'");
            }
            p->pos++;
        }
        item = jvalue(p, depth + 1);
        if (!item || !jpush(v, key, item)) {
            free(key);
            jfree(item);
            jfree(v);
            return jfail(p, "bad value");
        }
        jskip(p);
        if (p->pos < p->len && p->s[p->pos] == ',') {
            p->pos++;
            continue;
        }
        if (p->pos < p->len && p->s[p->pos] == close) {
            p->pos++;
            return v;
        }
        jfree(v);
        return jfail(p, is_obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static jv *jvalue(jparser *p, int depth) {
    char c;
    if (depth > SIM_MAX_DEPTH) return jfail(p, "nesting too deep");
    jskip(p);
    if (p->pos >= p->len) return jfail(p, "unexpected end of input");
    c = p->s[p->pos];
    if (c == '{' || c == '[') return jcontainer(p, depth, c == '{');
    if (c == '"') {
        jv *v;
        char *s = jstring_raw(p);
        if (!s) return NULL;
        v = jnew(J_STR);
        if (!v) {
            free(s);
            return jfail(p, "out of memory");
        }
        v->str = s;
        return v;
    }
    if (!strncmp(p->s + p->pos, "true", 4) || !strncmp(p->s + p->pos, "false", 5)) {
        jv *v = jnew(J_BOOL);
        if (!v) return jfail(p, "out of memory");
        v->b = (c == 't');
        p->pos += v->b ? 4 : 5;
        return v;
    }
    if (!strncmp(p->s + p->pos, "null", 4)) {
        p->pos += 4;
        return jnew(J_NULL);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
        char *end;
        jv *v = jnew(J_NUM);
        if (!v) return jfail(p, "out of memory");
        v->num = strtod(p->s + p->pos, &end);
        if (end == p->s + p->pos) {
            jfree(v);
            return jfail(p, "bad number");
        }
        p->pos = (size_t)(end - p->s);
        return v;
    }
    return jfail(p, "unexpected character");
}

static jv *jparse(const char *text, size_t len, char *err, size_t errlen) {
    jparser p;
    jv *v;
    memset(&p, 0, sizeof p);
    p.s = text;
    p.len = len;
    v = jvalue(&p, 0);
    if (v) {
        jskip(&p);
        if (p.pos != p.len) {
            jfree(v);
            v = NULL;
            jfail(&p, "trailing characters");
        }
    }
    if (!v) snprintf(err, errlen, "%s", p.err[0] ? p.err : "invalid JSON");
    return v;
}

/* Path lookup: "a.b.3.c" (numeric parts index arrays). */
static jv *jget(jv *v, const char *path) {
    char part[64];
    while (v && path && *path) {
        size_t k = 0;
        while (*path && *path != '.' && k + 1 < sizeof part) part[k++] = *path++;
        part[k] = 0;
        if (*path == '.') path++;
        if (v->t == J_OBJ) {
            int i;
            jv *found = NULL;
            for (i = 0; i < v->n; i++)
                if (!strcmp(v->keys[i], part)) found = v->items[i];
            v = found;
        } else if (v->t == J_ARR) {
            char *end;
            long idx = strtol(part, &end, 10);
            if (*end || idx < 0 || idx >= v->n) return NULL;
            v = v->items[idx];
        } else {
            return NULL;
        }
    }
    if (v && v->t == J_NULL) return NULL;
    return v;
}

/* Number (or bool as 0/1) at path; 0 when missing/null/other. */
static int jnum(jv *v, const char *path, double *out) {
    jv *x = jget(v, path);
    if (!x) return 0;
    if (x->t == J_NUM) {
        *out = x->num;
        return 1;
    }
    if (x->t == J_BOOL) {
        *out = x->b;
        return 1;
    }
    return 0;
}

static int jull(jv *v, const char *path, unsigned long long *out) {
    double d;
    if (!jnum(v, path, &d) || d < 0) return 0;
    *out = (unsigned long long)d;
    return 1;
}

static int juint(jv *v, const char *path, unsigned int *out) {
    double d;
    if (!jnum(v, path, &d) || d < 0) return 0;
    *out = (unsigned int)d;
    return 1;
}

static const char *jstr(jv *v, const char *path) {
    jv *x = jget(v, path);
    return (x && x->t == J_STR) ? x->str : NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* Simulator state                                                                            */
/* ------------------------------------------------------------------------------------------ */

struct nvmlDevice_st {
    int slot;  /* index into the state's "gpus" array */
    int index; /* NVML index among visible GPUs */
    jv *g;     /* the GPU's JSON object */
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static int g_refcount;
static jv *g_root;
static struct nvmlDevice_st g_dev[SIM_MAX_GPUS];
static int g_ndev; /* visible GPUs */

static const struct {
    nvmlReturn_t code;
    const char *name;
    const char *text;
} g_errors[] = {
    {NVML_SUCCESS, "NVML_SUCCESS", "Success"},
    {NVML_ERROR_UNINITIALIZED, "NVML_ERROR_UNINITIALIZED", "Uninitialized"},
    {NVML_ERROR_INVALID_ARGUMENT, "NVML_ERROR_INVALID_ARGUMENT", "Invalid Argument"},
    {NVML_ERROR_NOT_SUPPORTED, "NVML_ERROR_NOT_SUPPORTED", "Not Supported"},
    {NVML_ERROR_NO_PERMISSION, "NVML_ERROR_NO_PERMISSION", "Insufficient Permissions"},
    {NVML_ERROR_ALREADY_INITIALIZED, "NVML_ERROR_ALREADY_INITIALIZED", "Already Initialized"},
    {NVML_ERROR_NOT_FOUND, "NVML_ERROR_NOT_FOUND", "Not Found"},
    {NVML_ERROR_INSUFFICIENT_SIZE, "NVML_ERROR_INSUFFICIENT_SIZE", "Insufficient Size"},
    {NVML_ERROR_INSUFFICIENT_POWER, "NVML_ERROR_INSUFFICIENT_POWER", "Insufficient External Power"},
    {NVML_ERROR_DRIVER_NOT_LOADED, "NVML_ERROR_DRIVER_NOT_LOADED", "Driver Not Loaded"},
    {NVML_ERROR_TIMEOUT, "NVML_ERROR_TIMEOUT", "Timeout"},
    {NVML_ERROR_IRQ_ISSUE, "NVML_ERROR_IRQ_ISSUE", "Interrupt Request Issue"},
    {NVML_ERROR_LIBRARY_NOT_FOUND, "NVML_ERROR_LIBRARY_NOT_FOUND", "NVML Shared Library Not Found"},
    {NVML_ERROR_FUNCTION_NOT_FOUND, "NVML_ERROR_FUNCTION_NOT_FOUND", "Function Not Found"},
    {NVML_ERROR_CORRUPTED_INFOROM, "NVML_ERROR_CORRUPTED_INFOROM", "Corrupted infoROM"},
    {NVML_ERROR_GPU_IS_LOST, "NVML_ERROR_GPU_IS_LOST", "GPU is lost"},
    {NVML_ERROR_RESET_REQUIRED, "NVML_ERROR_RESET_REQUIRED", "GPU requires restart"},
    {NVML_ERROR_OPERATING_SYSTEM, "NVML_ERROR_OPERATING_SYSTEM",
     "The operating system has blocked the request."},
    {NVML_ERROR_LIB_RM_VERSION_MISMATCH, "NVML_ERROR_LIB_RM_VERSION_MISMATCH",
     "RM has detected an NVML/RM version mismatch."},
    {NVML_ERROR_IN_USE, "NVML_ERROR_IN_USE", "In use by another client"},
    {NVML_ERROR_MEMORY, "NVML_ERROR_MEMORY", "Insufficient Memory"},
    {NVML_ERROR_NO_DATA, "NVML_ERROR_NO_DATA", "No data"},
    {NVML_ERROR_VGPU_ECC_NOT_SUPPORTED, "NVML_ERROR_VGPU_ECC_NOT_SUPPORTED",
     "The requested vgpu operation is not available on target device, becasue ECC is enabled"},
    {NVML_ERROR_INSUFFICIENT_RESOURCES, "NVML_ERROR_INSUFFICIENT_RESOURCES", "Insufficient resources"},
    {NVML_ERROR_FREQ_NOT_SUPPORTED, "NVML_ERROR_FREQ_NOT_SUPPORTED", "Frequency not supported"},
    {NVML_ERROR_ARGUMENT_VERSION_MISMATCH, "NVML_ERROR_ARGUMENT_VERSION_MISMATCH",
     "Argument version mismatch"},
    {NVML_ERROR_DEPRECATED, "NVML_ERROR_DEPRECATED", "Deprecated"},
    {NVML_ERROR_NOT_READY, "NVML_ERROR_NOT_READY", "Not ready"},
    {NVML_ERROR_GPU_NOT_FOUND, "NVML_ERROR_GPU_NOT_FOUND", "GPU not found"},
    {NVML_ERROR_INVALID_STATE, "NVML_ERROR_INVALID_STATE", "Invalid state"},
    {NVML_ERROR_RESET_TYPE_NOT_SUPPORTED, "NVML_ERROR_RESET_TYPE_NOT_SUPPORTED", "Reset type not supported"},
    {NVML_ERROR_UNKNOWN, "NVML_ERROR_UNKNOWN", "Unknown Error"},
};

/* A return code given in the state as a number or as its NVML_ERROR_* name. */
static int code_of(jv *v, nvmlReturn_t *out) {
    size_t i;
    if (!v) return 0;
    if (v->t == J_NUM) {
        *out = (nvmlReturn_t)(int)v->num;
        return 1;
    }
    if (v->t == J_STR)
        for (i = 0; i < sizeof g_errors / sizeof g_errors[0]; i++)
            if (!strcmp(v->str, g_errors[i].name)) {
                *out = g_errors[i].code;
                return 1;
            }
    return 0;
}

static void sim_log(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "gpudc-lab-nvml: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void sim_unload(void) {
    jfree(g_root);
    g_root = NULL;
    g_ndev = 0;
    memset(g_dev, 0, sizeof g_dev);
}

static nvmlReturn_t sim_load(void) {
    const char *path = getenv("GPUDC_LAB_NVML_STATE");
    FILE *f;
    char *text, err[200];
    long size;
    jv *gpus;
    int i;
    nvmlReturn_t code;

    if (!path || !*path) path = SIM_DEFAULT_STATE;
    f = fopen(path, "rb");
    if (!f) return NVML_ERROR_DRIVER_NOT_LOADED; /* no state: as a host without the driver */
    if (fseek(f, 0, SEEK_END) || (size = ftell(f)) < 0 || fseek(f, 0, SEEK_SET)) {
        fclose(f);
        return NVML_ERROR_UNKNOWN;
    }
    text = malloc((size_t)size + 1);
    if (!text || fread(text, 1, (size_t)size, f) != (size_t)size) {
        free(text);
        fclose(f);
        return NVML_ERROR_UNKNOWN;
    }
    fclose(f);
    text[size] = 0;
    g_root = jparse(text, (size_t)size, err, sizeof err);
    free(text);
    if (!g_root || g_root->t != J_OBJ) {
        sim_log("%s: %s", path, g_root ? "top level is not an object" : err);
        sim_unload();
        return NVML_ERROR_UNKNOWN;
    }
    if (code_of(jget(g_root, "init_error"), &code) && code != NVML_SUCCESS) {
        sim_unload();
        return code;
    }
    gpus = jget(g_root, "gpus");
    if (gpus && gpus->t == J_ARR) {
        for (i = 0; i < gpus->n && g_ndev < SIM_MAX_GPUS; i++) {
            jv *g = gpus->items[i];
            jv *vis = jget(g, "visible");
            if (g->t != J_OBJ || (vis && vis->t == J_BOOL && !vis->b)) continue;
            g_dev[g_ndev].slot = i;
            g_dev[g_ndev].index = g_ndev;
            g_dev[g_ndev].g = g;
            g_ndev++;
        }
    }
    return NVML_SUCCESS;
}

/* ---- hangs and per-call failures ---- */

static void sim_sleep(double seconds) {
    struct timespec ts, rem;
    ts.tv_sec = (time_t)seconds;
    ts.tv_nsec = (long)((seconds - (double)ts.tv_sec) * 1e9);
    while (nanosleep(&ts, &rem) == -1 && errno == EINTR) ts = rem;
}

static int name_matches(jv *list, const char *fname, int is_device_query) {
    int i;
    if (!list || list->t != J_ARR) return 0;
    for (i = 0; i < list->n; i++) {
        const char *pat = list->items[i]->t == J_STR ? list->items[i]->str : NULL;
        if (!pat) continue;
        if (!strcmp(pat, "device-queries") && is_device_query) return 1;
        if (!fnmatch(pat, fname, 0)) return 1;
    }
    return 0;
}

static int in_int_list(jv *list, int value) {
    int i;
    if (!list || list->t != J_ARR) return 1; /* no list: every GPU */
    for (i = 0; i < list->n; i++)
        if (list->items[i]->t == J_NUM && (int)list->items[i]->num == value) return 1;
    return 0;
}

/* state.crash = {"calls": [patterns], "gpus": [slots] (optional)}: the call faults with SIGSEGV,
 * as a driver library that is broken or out of step with the kernel module can. */
static void maybe_crash(const char *fname, const struct nvmlDevice_st *dev) {
    jv *crash = jget(g_root, "crash");
    if (!crash) return;
    if (!name_matches(jget(crash, "calls"), fname, dev != NULL)) return;
    if (dev && !in_int_list(jget(crash, "gpus"), dev->slot)) return;
    raise(SIGSEGV);
}

/* state.hang = {"calls": [patterns], "gpus": [slots] (optional), "seconds": N (default 3600)} */
static void maybe_hang(const char *fname, const struct nvmlDevice_st *dev) {
    jv *hang = jget(g_root, "hang");
    double seconds = 3600;
    maybe_crash(fname, dev);
    if (!hang) return;
    if (!name_matches(jget(hang, "calls"), fname, dev != NULL)) return;
    if (dev && !in_int_list(jget(hang, "gpus"), dev->slot)) return;
    jnum(hang, "seconds", &seconds);
    sim_sleep(seconds);
}

static nvmlReturn_t enter_sys(const char *fname) {
    nvmlReturn_t code;
    if (!g_refcount || !g_root) return NVML_ERROR_UNINITIALIZED;
    maybe_hang(fname, NULL);
    if (code_of(jget(jget(g_root, "fail"), fname), &code)) return code;
    return NVML_SUCCESS;
}

static int valid_handle(nvmlDevice_t d) {
    const struct nvmlDevice_st *p = d;
    if (!p || p < g_dev || p >= g_dev + g_ndev) return 0;
    return ((const char *)p - (const char *)g_dev) % sizeof(struct nvmlDevice_st) == 0;
}

static int gpu_lost(jv *g) {
    double lost = 0;
    return jnum(g, "lost", &lost) && lost != 0;
}

static nvmlReturn_t enter_dev(const char *fname, nvmlDevice_t d) {
    nvmlReturn_t code;
    if (!g_refcount || !g_root) return NVML_ERROR_UNINITIALIZED;
    if (!valid_handle(d)) return NVML_ERROR_INVALID_ARGUMENT;
    maybe_hang(fname, d);
    if (gpu_lost(d->g)) return NVML_ERROR_GPU_IS_LOST;
    if (code_of(jget(jget(d->g, "fail"), fname), &code)) return code;
    return NVML_SUCCESS;
}

#define SYS(fname)                                \
    do {                                          \
        nvmlReturn_t _r = enter_sys(fname);       \
        if (_r != NVML_SUCCESS) return _r;        \
    } while (0)
#define DEV(fname, d)                             \
    do {                                          \
        nvmlReturn_t _r = enter_dev(fname, d);    \
        if (_r != NVML_SUCCESS) return _r;        \
    } while (0)
#define NEED(p)                                               \
    do {                                                      \
        if (!(p)) return NVML_ERROR_INVALID_ARGUMENT;         \
    } while (0)

static nvmlReturn_t put_str(char *dst, unsigned int length, const char *src) {
    if (!src) return NVML_ERROR_NOT_SUPPORTED;
    if (!dst) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

static nvmlReturn_t put_uint(jv *g, const char *path, unsigned int *out) {
    NEED(out);
    return juint(g, path, out) ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

static nvmlReturn_t put_enable(jv *g, const char *path, nvmlEnableState_t *out) {
    double v;
    NEED(out);
    if (!jnum(g, path, &v)) return NVML_ERROR_NOT_SUPPORTED;
    *out = v != 0 ? NVML_FEATURE_ENABLED : NVML_FEATURE_DISABLED;
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Initialization, errors, system queries                                                      */
/* ------------------------------------------------------------------------------------------ */

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    nvmlReturn_t r = NVML_SUCCESS;
    (void)flags;
    pthread_mutex_lock(&g_lock);
    if (g_refcount == 0) r = sim_load();
    if (r == NVML_SUCCESS) g_refcount++;
    pthread_mutex_unlock(&g_lock);
    if (r == NVML_SUCCESS) maybe_hang("nvmlInit", NULL);
    return r;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    nvmlReturn_t r = NVML_SUCCESS;
    pthread_mutex_lock(&g_lock);
    if (g_refcount == 0) {
        r = NVML_ERROR_UNINITIALIZED;
    } else if (--g_refcount == 0) {
        sim_unload();
    }
    pthread_mutex_unlock(&g_lock);
    return r;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    size_t i;
    for (i = 0; i < sizeof g_errors / sizeof g_errors[0]; i++)
        if (g_errors[i].code == result) return g_errors[i].text;
    return "Unknown Error";
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    SYS("nvmlSystemGetDriverVersion");
    return put_str(version, length, jstr(g_root, "driver_version"));
}

nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length) {
    SYS("nvmlSystemGetNVMLVersion");
    return put_str(version, length, jstr(g_root, "nvml_version"));
}

nvmlReturn_t nvmlSystemGetDriverBranch(nvmlSystemDriverBranchInfo_t *branchInfo, unsigned int length) {
    SYS("nvmlSystemGetDriverBranch");
    NEED(branchInfo);
    if (branchInfo->version != nvmlSystemDriverBranchInfo_v1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (length > sizeof branchInfo->branch) length = sizeof branchInfo->branch;
    return put_str(branchInfo->branch, length, jstr(g_root, "driver_branch"));
}

static nvmlReturn_t cuda_version(int *out) {
    double v;
    NEED(out);
    if (!jnum(g_root, "cuda_driver_version", &v)) return NVML_ERROR_NOT_SUPPORTED;
    *out = (int)v;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion) {
    SYS("nvmlSystemGetCudaDriverVersion");
    return cuda_version(cudaDriverVersion);
}

nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion) {
    SYS("nvmlSystemGetCudaDriverVersion_v2");
    return cuda_version(cudaDriverVersion);
}

/* ------------------------------------------------------------------------------------------ */
/* Device enumeration                                                                          */
/* ------------------------------------------------------------------------------------------ */

static nvmlReturn_t device_count(const char *fname, unsigned int *deviceCount) {
    SYS(fname);
    NEED(deviceCount);
    *deviceCount = (unsigned int)g_ndev;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount) {
    return device_count("nvmlDeviceGetCount_v2", deviceCount);
}
nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount) {
    return device_count("nvmlDeviceGetCount", deviceCount);
}

/* A lost GPU is enumerated but its handle cannot be taken: NVML says GPU_IS_LOST there. */
static nvmlReturn_t give_handle(int i, nvmlDevice_t *device) {
    if (gpu_lost(g_dev[i].g)) return NVML_ERROR_GPU_IS_LOST;
    *device = &g_dev[i];
    return NVML_SUCCESS;
}

static nvmlReturn_t handle_by_index(const char *fname, unsigned int index, nvmlDevice_t *device) {
    SYS(fname);
    NEED(device);
    if (index >= (unsigned int)g_ndev) return NVML_ERROR_INVALID_ARGUMENT;
    return give_handle((int)index, device);
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    return handle_by_index("nvmlDeviceGetHandleByIndex_v2", index, device);
}
nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device) {
    return handle_by_index("nvmlDeviceGetHandleByIndex", index, device);
}

/* "domain:bus:device.function" or "bus:device.function" (hex) -> 1 on success. */
static int parse_bus_id(const char *s, unsigned int out[4]) {
    char tail;
    if (sscanf(s, "%x:%x:%x.%x%c", &out[0], &out[1], &out[2], &out[3], &tail) == 4) return 1;
    out[0] = 0;
    return sscanf(s, "%x:%x.%x%c", &out[1], &out[2], &out[3], &tail) == 3;
}

static nvmlReturn_t handle_by_key(const char *key, const char *value, nvmlDevice_t *device, int pci) {
    int i;
    unsigned int want[4], have_id[4];
    NEED(value && device);
    if (pci && !parse_bus_id(value, want)) return NVML_ERROR_INVALID_ARGUMENT;
    for (i = 0; i < g_ndev; i++) {
        const char *have = jstr(g_dev[i].g, key);
        if (!have) continue;
        if (pci) {
            /* Bus ids compare by value: any case, 4- or 8-digit domain, or none (domain 0). */
            if (parse_bus_id(have, have_id) && !memcmp(want, have_id, sizeof want)) return give_handle(i, device);
        } else if (!strcmp(have, value)) {
            return give_handle(i, device);
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device) {
    SYS("nvmlDeviceGetHandleByUUID");
    return handle_by_key("uuid", uuid, device, 0);
}

nvmlReturn_t nvmlDeviceGetHandleByUUIDV(const nvmlUUID_t *uuid, nvmlDevice_t *device) {
    SYS("nvmlDeviceGetHandleByUUIDV");
    NEED(uuid);
    if (uuid->type != NVML_UUID_TYPE_ASCII) return NVML_ERROR_INVALID_ARGUMENT;
    return handle_by_key("uuid", uuid->value.str, device, 0);
}

nvmlReturn_t nvmlDeviceGetHandleBySerial(const char *serial, nvmlDevice_t *device) {
    SYS("nvmlDeviceGetHandleBySerial");
    return handle_by_key("serial", serial, device, 0);
}

nvmlReturn_t nvmlDeviceGetHandleByPciBusId_v2(const char *pciBusId, nvmlDevice_t *device) {
    SYS("nvmlDeviceGetHandleByPciBusId_v2");
    return handle_by_key("pci.bus_id", pciBusId, device, 1);
}
nvmlReturn_t nvmlDeviceGetHandleByPciBusId(const char *pciBusId, nvmlDevice_t *device) {
    SYS("nvmlDeviceGetHandleByPciBusId");
    return handle_by_key("pci.bus_id", pciBusId, device, 1);
}

/* ------------------------------------------------------------------------------------------ */
/* Identity                                                                                    */
/* ------------------------------------------------------------------------------------------ */

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length) {
    DEV("nvmlDeviceGetName", device);
    return put_str(name, length, jstr(device->g, "name"));
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length) {
    DEV("nvmlDeviceGetUUID", device);
    return put_str(uuid, length, jstr(device->g, "uuid"));
}

nvmlReturn_t nvmlDeviceGetSerial(nvmlDevice_t device, char *serial, unsigned int length) {
    DEV("nvmlDeviceGetSerial", device);
    return put_str(serial, length, jstr(device->g, "serial"));
}

nvmlReturn_t nvmlDeviceGetBoardPartNumber(nvmlDevice_t device, char *partNumber, unsigned int length) {
    DEV("nvmlDeviceGetBoardPartNumber", device);
    return put_str(partNumber, length, jstr(device->g, "board_part_number"));
}

nvmlReturn_t nvmlDeviceGetVbiosVersion(nvmlDevice_t device, char *version, unsigned int length) {
    DEV("nvmlDeviceGetVbiosVersion", device);
    return put_str(version, length, jstr(device->g, "vbios_version"));
}

nvmlReturn_t nvmlDeviceGetInforomImageVersion(nvmlDevice_t device, char *version, unsigned int length) {
    DEV("nvmlDeviceGetInforomImageVersion", device);
    return put_str(version, length, jstr(device->g, "inforom_image_version"));
}

nvmlReturn_t nvmlDeviceGetGspFirmwareVersion(nvmlDevice_t device, char *version) {
    DEV("nvmlDeviceGetGspFirmwareVersion", device);
    return put_str(version, NVML_GSP_FIRMWARE_VERSION_BUF_SIZE, jstr(device->g, "gsp_firmware_version"));
}

nvmlReturn_t nvmlDeviceGetGspFirmwareMode(nvmlDevice_t device, unsigned int *isEnabled, unsigned int *defaultMode) {
    const char *v;
    DEV("nvmlDeviceGetGspFirmwareMode", device);
    NEED(isEnabled && defaultMode);
    v = jstr(device->g, "gsp_firmware_version");
    *isEnabled = v ? 1 : 0;
    *defaultMode = *isEnabled;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index) {
    DEV("nvmlDeviceGetIndex", device);
    NEED(index);
    *index = (unsigned int)device->index;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber) {
    DEV("nvmlDeviceGetMinorNumber", device);
    return put_uint(device->g, "minor_number", minorNumber);
}

nvmlReturn_t nvmlDeviceGetArchitecture(nvmlDevice_t device, nvmlDeviceArchitecture_t *arch) {
    const char *a;
    DEV("nvmlDeviceGetArchitecture", device);
    NEED(arch);
    a = jstr(device->g, "architecture");
    if (!a) return NVML_ERROR_NOT_SUPPORTED;
    if (!strcmp(a, "hopper"))
        *arch = NVML_DEVICE_ARCH_HOPPER;
    else if (!strcmp(a, "blackwell"))
        *arch = NVML_DEVICE_ARCH_BLACKWELL;
    else if (!strcmp(a, "ampere"))
        *arch = NVML_DEVICE_ARCH_AMPERE;
    else
        *arch = NVML_DEVICE_ARCH_UNKNOWN;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetCudaComputeCapability(nvmlDevice_t device, int *major, int *minor) {
    double ma, mi;
    DEV("nvmlDeviceGetCudaComputeCapability", device);
    NEED(major && minor);
    if (!jnum(device->g, "compute_capability.0", &ma) || !jnum(device->g, "compute_capability.1", &mi))
        return NVML_ERROR_NOT_SUPPORTED;
    *major = (int)ma;
    *minor = (int)mi;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetBrand(nvmlDevice_t device, nvmlBrandType_t *type) {
    DEV("nvmlDeviceGetBrand", device);
    NEED(type);
    *type = NVML_BRAND_NVIDIA;
    return NVML_SUCCESS;
}

/* ---- PCI ---- */

static unsigned int hexnum(const char *s) { return s ? (unsigned int)strtoul(s, NULL, 16) : 0; }

static nvmlReturn_t fill_pci(jv *g, nvmlPciInfo_t *pci) {
    const char *bus_id = jstr(g, "pci.bus_id");
    unsigned int dom = 0, bus = 0, dev = 0, fn = 0;
    NEED(pci);
    if (!bus_id) return NVML_ERROR_NOT_SUPPORTED;
    memset(pci, 0, sizeof *pci);
    if (sscanf(bus_id, "%x:%x:%x.%x", &dom, &bus, &dev, &fn) != 4) return NVML_ERROR_UNKNOWN;
    pci->domain = dom;
    pci->bus = bus;
    pci->device = dev;
    pci->pciDeviceId = hexnum(jstr(g, "pci.device_id"));
    pci->pciSubSystemId = hexnum(jstr(g, "pci.subsystem_id"));
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%X", dom, bus, dev, fn);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.%X", dom & 0xffff, bus, dev, fn);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPciInfo_v3(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    DEV("nvmlDeviceGetPciInfo_v3", device);
    return fill_pci(device->g, pci);
}
nvmlReturn_t nvmlDeviceGetPciInfo_v2(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    DEV("nvmlDeviceGetPciInfo_v2", device);
    return fill_pci(device->g, pci);
}
nvmlReturn_t nvmlDeviceGetPciInfo(nvmlDevice_t device, nvmlPciInfo_t *pci) {
    DEV("nvmlDeviceGetPciInfo", device);
    return fill_pci(device->g, pci);
}

nvmlReturn_t nvmlDeviceGetPciInfoExt(nvmlDevice_t device, nvmlPciInfoExt_t *pci) {
    nvmlPciInfo_t legacy;
    nvmlReturn_t r;
    DEV("nvmlDeviceGetPciInfoExt", device);
    NEED(pci);
    if (pci->version != nvmlPciInfoExt_v1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    r = fill_pci(device->g, &legacy);
    if (r != NVML_SUCCESS) return r;
    pci->domain = legacy.domain;
    pci->bus = legacy.bus;
    pci->device = legacy.device;
    pci->pciDeviceId = legacy.pciDeviceId;
    pci->pciSubSystemId = legacy.pciSubSystemId;
    pci->baseClass = 0x03; /* display controller */
    pci->subClass = 0x02;  /* 3D controller */
    memcpy(pci->busId, legacy.busId, sizeof pci->busId);
    return NVML_SUCCESS;
}

static nvmlReturn_t pcie_field(nvmlDevice_t device, const char *key, unsigned int *out) {
    NEED(out);
    if (!jget(device->g, "pcie")) return NVML_ERROR_NOT_SUPPORTED;
    return put_uint(device->g, key, out);
}

nvmlReturn_t nvmlDeviceGetCurrPcieLinkGeneration(nvmlDevice_t device, unsigned int *currLinkGen) {
    DEV("nvmlDeviceGetCurrPcieLinkGeneration", device);
    return pcie_field(device, "pcie.gen_current", currLinkGen);
}
nvmlReturn_t nvmlDeviceGetMaxPcieLinkGeneration(nvmlDevice_t device, unsigned int *maxLinkGen) {
    DEV("nvmlDeviceGetMaxPcieLinkGeneration", device);
    return pcie_field(device, "pcie.gen_max", maxLinkGen);
}
nvmlReturn_t nvmlDeviceGetGpuMaxPcieLinkGeneration(nvmlDevice_t device, unsigned int *maxLinkGenDevice) {
    DEV("nvmlDeviceGetGpuMaxPcieLinkGeneration", device);
    return pcie_field(device, "pcie.gen_max_gpu", maxLinkGenDevice);
}
nvmlReturn_t nvmlDeviceGetCurrPcieLinkWidth(nvmlDevice_t device, unsigned int *currLinkWidth) {
    DEV("nvmlDeviceGetCurrPcieLinkWidth", device);
    return pcie_field(device, "pcie.width_current", currLinkWidth);
}
nvmlReturn_t nvmlDeviceGetMaxPcieLinkWidth(nvmlDevice_t device, unsigned int *maxLinkWidth) {
    DEV("nvmlDeviceGetMaxPcieLinkWidth", device);
    return pcie_field(device, "pcie.width_max", maxLinkWidth);
}
nvmlReturn_t nvmlDeviceGetPcieReplayCounter(nvmlDevice_t device, unsigned int *value) {
    DEV("nvmlDeviceGetPcieReplayCounter", device);
    return pcie_field(device, "pcie.replay_counter", value);
}

/* ------------------------------------------------------------------------------------------ */
/* Modes, ECC, remapping                                                                       */
/* ------------------------------------------------------------------------------------------ */

nvmlReturn_t nvmlDeviceGetPersistenceMode(nvmlDevice_t device, nvmlEnableState_t *mode) {
    DEV("nvmlDeviceGetPersistenceMode", device);
    return put_enable(device->g, "persistence_mode", mode);
}

nvmlReturn_t nvmlDeviceGetEccMode(nvmlDevice_t device, nvmlEnableState_t *current, nvmlEnableState_t *pending) {
    nvmlReturn_t r;
    DEV("nvmlDeviceGetEccMode", device);
    NEED(current && pending);
    r = put_enable(device->g, "ecc.current", current);
    if (r != NVML_SUCCESS) return r;
    return put_enable(device->g, "ecc.pending", pending);
}

nvmlReturn_t nvmlDeviceGetDefaultEccMode(nvmlDevice_t device, nvmlEnableState_t *defaultMode) {
    DEV("nvmlDeviceGetDefaultEccMode", device);
    return put_enable(device->g, "ecc.default", defaultMode);
}

static const char *ecc_counter_path(nvmlMemoryErrorType_t errorType, nvmlEccCounterType_t counterType,
                                    char *buf, size_t len) {
    const char *kind, *when;
    if (errorType == NVML_MEMORY_ERROR_TYPE_CORRECTED)
        kind = "corrected";
    else if (errorType == NVML_MEMORY_ERROR_TYPE_UNCORRECTED)
        kind = "uncorrected";
    else
        return NULL;
    if (counterType == NVML_VOLATILE_ECC)
        when = "volatile";
    else if (counterType == NVML_AGGREGATE_ECC)
        when = "aggregate";
    else
        return NULL;
    snprintf(buf, len, "ecc.counters.%s.%s", when, kind);
    return buf;
}

static int ecc_enabled(jv *g) {
    double v = 0;
    return jnum(g, "ecc.current", &v) && v != 0;
}

static const char *const g_locations[] = {
    "l1_cache", "l2_cache", "dram", "register_file", "texture_memory", "texture_shm", "cbu", "sram",
};

nvmlReturn_t nvmlDeviceGetMemoryErrorCounter(nvmlDevice_t device, nvmlMemoryErrorType_t errorType,
                                             nvmlEccCounterType_t counterType,
                                             nvmlMemoryLocation_t locationType, unsigned long long *count) {
    char base[96], path[128];
    DEV("nvmlDeviceGetMemoryErrorCounter", device);
    NEED(count);
    if (!ecc_counter_path(errorType, counterType, base, sizeof base)) return NVML_ERROR_INVALID_ARGUMENT;
    if ((unsigned)locationType >= sizeof g_locations / sizeof g_locations[0]) return NVML_ERROR_INVALID_ARGUMENT;
    if (!ecc_enabled(device->g)) return NVML_ERROR_NOT_SUPPORTED;
    snprintf(path, sizeof path, "%s.%s", base, g_locations[locationType]);
    return jull(device->g, path, count) ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

nvmlReturn_t nvmlDeviceGetTotalEccErrors(nvmlDevice_t device, nvmlMemoryErrorType_t errorType,
                                         nvmlEccCounterType_t counterType, unsigned long long *eccCounts) {
    char base[96];
    jv *obj;
    int i;
    DEV("nvmlDeviceGetTotalEccErrors", device);
    NEED(eccCounts);
    if (!ecc_counter_path(errorType, counterType, base, sizeof base)) return NVML_ERROR_INVALID_ARGUMENT;
    if (!ecc_enabled(device->g)) return NVML_ERROR_NOT_SUPPORTED;
    obj = jget(device->g, base);
    if (!obj || obj->t != J_OBJ) return NVML_ERROR_NOT_SUPPORTED;
    *eccCounts = 0;
    for (i = 0; i < obj->n; i++)
        if (obj->items[i]->t == J_NUM) *eccCounts += (unsigned long long)obj->items[i]->num;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetDetailedEccErrors(nvmlDevice_t device, nvmlMemoryErrorType_t errorType,
                                            nvmlEccCounterType_t counterType, nvmlEccErrorCounts_t *eccCounts) {
    DEV("nvmlDeviceGetDetailedEccErrors", device);
    (void)errorType;
    (void)counterType;
    NEED(eccCounts);
    return NVML_ERROR_NOT_SUPPORTED; /* deprecated; not supported since Ampere */
}

nvmlReturn_t nvmlDeviceGetRemappedRows(nvmlDevice_t device, unsigned int *corrRows, unsigned int *uncRows,
                                       unsigned int *isPending, unsigned int *failureOccurred) {
    DEV("nvmlDeviceGetRemappedRows", device);
    NEED(corrRows && uncRows && isPending && failureOccurred);
    if (!jget(device->g, "remapped_rows")) return NVML_ERROR_NOT_SUPPORTED;
    *corrRows = *uncRows = *isPending = *failureOccurred = 0;
    juint(device->g, "remapped_rows.correctable", corrRows);
    juint(device->g, "remapped_rows.uncorrectable", uncRows);
    juint(device->g, "remapped_rows.pending", isPending);
    juint(device->g, "remapped_rows.failure", failureOccurred);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetRemappedRows_v2(nvmlDevice_t device, nvmlRemappedRowsInfo_v2_t *info) {
    DEV("nvmlDeviceGetRemappedRows_v2", device);
    NEED(info);
    if (!jget(device->g, "remapped_rows")) return NVML_ERROR_NOT_SUPPORTED;
    memset(info, 0, sizeof *info);
    juint(device->g, "remapped_rows.correctable", &info->corrActiveRemaps);
    juint(device->g, "remapped_rows.correctable_inactive", &info->corrInactiveRemaps);
    juint(device->g, "remapped_rows.uncorrectable", &info->uncActiveRemaps);
    juint(device->g, "remapped_rows.uncorrectable_inactive", &info->uncInactiveRemaps);
    juint(device->g, "remapped_rows.pending", &info->bPending);
    juint(device->g, "remapped_rows.failure", &info->bFailureOccurred);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetRowRemapperHistogram(nvmlDevice_t device, nvmlRowRemapperHistogramValues_t *values) {
    DEV("nvmlDeviceGetRowRemapperHistogram", device);
    NEED(values);
    if (!jget(device->g, "row_remapper_histogram")) return NVML_ERROR_NOT_SUPPORTED;
    memset(values, 0, sizeof *values);
    juint(device->g, "row_remapper_histogram.max", &values->max);
    juint(device->g, "row_remapper_histogram.high", &values->high);
    juint(device->g, "row_remapper_histogram.partial", &values->partial);
    juint(device->g, "row_remapper_histogram.low", &values->low);
    juint(device->g, "row_remapper_histogram.none", &values->none);
    return NVML_SUCCESS;
}

/* Page retirement: only where the state has a "retired_pages" object (pre-Ampere boards);
 * Hopper and Blackwell use row remapping and NVML answers NOT_SUPPORTED. */
static nvmlReturn_t retired_pages(nvmlDevice_t device, nvmlPageRetirementCause_t cause, unsigned int *pageCount,
                                  unsigned long long *addresses, unsigned long long *timestamps) {
    const char *key;
    unsigned int have = 0, i;
    NEED(pageCount);
    if (!jget(device->g, "retired_pages")) return NVML_ERROR_NOT_SUPPORTED;
    if (cause == NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS)
        key = "retired_pages.single_bit";
    else if (cause == NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR)
        key = "retired_pages.double_bit";
    else
        return NVML_ERROR_INVALID_ARGUMENT;
    juint(device->g, key, &have);
    if (*pageCount == 0 || !addresses) {
        *pageCount = have;
        return have ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS;
    }
    if (*pageCount < have) {
        *pageCount = have;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    for (i = 0; i < have; i++) {
        addresses[i] = 0x1000ULL * (i + 1);
        if (timestamps) timestamps[i] = 0;
    }
    *pageCount = have;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetRetiredPages(nvmlDevice_t device, nvmlPageRetirementCause_t cause, unsigned int *pageCount,
                                       unsigned long long *addresses) {
    DEV("nvmlDeviceGetRetiredPages", device);
    return retired_pages(device, cause, pageCount, addresses, NULL);
}

nvmlReturn_t nvmlDeviceGetRetiredPages_v2(nvmlDevice_t device, nvmlPageRetirementCause_t cause,
                                          unsigned int *pageCount, unsigned long long *addresses,
                                          unsigned long long *timestamps) {
    DEV("nvmlDeviceGetRetiredPages_v2", device);
    return retired_pages(device, cause, pageCount, addresses, timestamps);
}

nvmlReturn_t nvmlDeviceGetRetiredPagesPendingStatus(nvmlDevice_t device, nvmlEnableState_t *isPending) {
    DEV("nvmlDeviceGetRetiredPagesPendingStatus", device);
    NEED(isPending);
    if (!jget(device->g, "retired_pages")) return NVML_ERROR_NOT_SUPPORTED;
    return put_enable(device->g, "retired_pages.pending", isPending);
}

/* ------------------------------------------------------------------------------------------ */
/* Thermal, power, clocks, utilization, memory                                                 */
/* ------------------------------------------------------------------------------------------ */

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, nvmlTemperatureSensors_t sensorType, unsigned int *temp) {
    DEV("nvmlDeviceGetTemperature", device);
    NEED(temp);
    if (sensorType != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    return put_uint(device->g, "temperature_c", temp);
}

nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_t *temperature) {
    double t;
    DEV("nvmlDeviceGetTemperatureV", device);
    NEED(temperature);
    if (temperature->version != nvmlTemperature_v1) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if (temperature->sensorType != NVML_TEMPERATURE_GPU) return NVML_ERROR_INVALID_ARGUMENT;
    if (!jnum(device->g, "temperature_c", &t)) return NVML_ERROR_NOT_SUPPORTED;
    temperature->temperature = (int)t;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperatureThreshold(nvmlDevice_t device, nvmlTemperatureThresholds_t thresholdType,
                                               unsigned int *temp) {
    static const char *const keys[] = {"shutdown", "slowdown", "mem_max", "gpu_max"};
    char path[64];
    DEV("nvmlDeviceGetTemperatureThreshold", device);
    NEED(temp);
    if ((unsigned)thresholdType >= NVML_TEMPERATURE_THRESHOLD_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
    if ((unsigned)thresholdType >= sizeof keys / sizeof keys[0]) return NVML_ERROR_NOT_SUPPORTED;
    snprintf(path, sizeof path, "temperature_thresholds_c.%s", keys[thresholdType]);
    return put_uint(device->g, path, temp);
}

nvmlReturn_t nvmlDeviceGetFanSpeed(nvmlDevice_t device, unsigned int *speed) {
    DEV("nvmlDeviceGetFanSpeed", device);
    return put_uint(device->g, "fan_speed_percent", speed); /* SXM boards: no fan, NOT_SUPPORTED */
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power) {
    DEV("nvmlDeviceGetPowerUsage", device);
    return put_uint(device->g, "power_mw", power);
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy) {
    DEV("nvmlDeviceGetTotalEnergyConsumption", device);
    NEED(energy);
    return jull(device->g, "energy_mj", energy) ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit) {
    DEV("nvmlDeviceGetPowerManagementLimit", device);
    return put_uint(device->g, "power_limit_mw", limit);
}

nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit) {
    DEV("nvmlDeviceGetEnforcedPowerLimit", device);
    return put_uint(device->g, "power_limit_mw", limit);
}

nvmlReturn_t nvmlDeviceGetPowerManagementDefaultLimit(nvmlDevice_t device, unsigned int *defaultLimit) {
    DEV("nvmlDeviceGetPowerManagementDefaultLimit", device);
    return put_uint(device->g, "power_limit_default_mw", defaultLimit);
}

nvmlReturn_t nvmlDeviceGetPowerManagementLimitConstraints(nvmlDevice_t device, unsigned int *minLimit,
                                                          unsigned int *maxLimit) {
    nvmlReturn_t r;
    DEV("nvmlDeviceGetPowerManagementLimitConstraints", device);
    NEED(minLimit && maxLimit);
    r = put_uint(device->g, "power_limit_min_mw", minLimit);
    if (r != NVML_SUCCESS) return r;
    return put_uint(device->g, "power_limit_max_mw", maxLimit);
}

static nvmlReturn_t event_reasons(nvmlDevice_t device, const char *key, unsigned long long *out) {
    NEED(out);
    return jull(device->g, key, out) ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(nvmlDevice_t device, unsigned long long *clocksEventReasons) {
    DEV("nvmlDeviceGetCurrentClocksEventReasons", device);
    return event_reasons(device, "clocks_event_reasons", clocksEventReasons);
}
nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(nvmlDevice_t device,
                                                       unsigned long long *clocksThrottleReasons) {
    DEV("nvmlDeviceGetCurrentClocksThrottleReasons", device);
    return event_reasons(device, "clocks_event_reasons", clocksThrottleReasons);
}
nvmlReturn_t nvmlDeviceGetSupportedClocksEventReasons(nvmlDevice_t device,
                                                      unsigned long long *supportedClocksEventReasons) {
    DEV("nvmlDeviceGetSupportedClocksEventReasons", device);
    return event_reasons(device, "supported_clocks_event_reasons", supportedClocksEventReasons);
}
nvmlReturn_t nvmlDeviceGetSupportedClocksThrottleReasons(nvmlDevice_t device,
                                                         unsigned long long *supportedClocksThrottleReasons) {
    DEV("nvmlDeviceGetSupportedClocksThrottleReasons", device);
    return event_reasons(device, "supported_clocks_event_reasons", supportedClocksThrottleReasons);
}

static const char *clock_key(nvmlClockType_t type) {
    switch (type) {
    case NVML_CLOCK_GRAPHICS: return "graphics";
    case NVML_CLOCK_SM: return "sm";
    case NVML_CLOCK_MEM: return "mem";
    case NVML_CLOCK_VIDEO: return "video";
    default: return NULL;
    }
}

static nvmlReturn_t clock_value(nvmlDevice_t device, const char *group, nvmlClockType_t type, unsigned int *out) {
    char path[64];
    const char *k = clock_key(type);
    NEED(out);
    if (!k) return NVML_ERROR_INVALID_ARGUMENT;
    snprintf(path, sizeof path, "%s.%s", group, k);
    return put_uint(device->g, path, out);
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock) {
    DEV("nvmlDeviceGetClockInfo", device);
    return clock_value(device, "clocks_mhz", type, clock);
}

nvmlReturn_t nvmlDeviceGetMaxClockInfo(nvmlDevice_t device, nvmlClockType_t type, unsigned int *clock) {
    DEV("nvmlDeviceGetMaxClockInfo", device);
    return clock_value(device, "max_clocks_mhz", type, clock);
}

nvmlReturn_t nvmlDeviceGetClock(nvmlDevice_t device, nvmlClockType_t clockType, nvmlClockId_t clockId,
                                unsigned int *clockMHz) {
    DEV("nvmlDeviceGetClock", device);
    if (clockId == NVML_CLOCK_ID_CURRENT) return clock_value(device, "clocks_mhz", clockType, clockMHz);
    if (clockId == NVML_CLOCK_ID_CUSTOMER_BOOST_MAX) return clock_value(device, "max_clocks_mhz", clockType, clockMHz);
    if ((unsigned)clockId >= NVML_CLOCK_ID_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
    return NVML_ERROR_NOT_SUPPORTED;
}

nvmlReturn_t nvmlDeviceGetPerformanceState(nvmlDevice_t device, nvmlPstates_t *pState) {
    unsigned int p;
    DEV("nvmlDeviceGetPerformanceState", device);
    NEED(pState);
    if (!juint(device->g, "pstate", &p)) return NVML_ERROR_NOT_SUPPORTED;
    *pState = (nvmlPstates_t)p;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization) {
    DEV("nvmlDeviceGetUtilizationRates", device);
    NEED(utilization);
    if (!jget(device->g, "utilization")) return NVML_ERROR_NOT_SUPPORTED;
    utilization->gpu = utilization->memory = 0;
    juint(device->g, "utilization.gpu", &utilization->gpu);
    juint(device->g, "utilization.memory", &utilization->memory);
    return NVML_SUCCESS;
}

static nvmlReturn_t memory_values(nvmlDevice_t device, unsigned long long *total, unsigned long long *reserved,
                                  unsigned long long *used) {
    if (!jull(device->g, "memory.total_bytes", total)) return NVML_ERROR_NOT_SUPPORTED;
    *reserved = *used = 0;
    jull(device->g, "memory.reserved_bytes", reserved);
    jull(device->g, "memory.used_bytes", used);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory) {
    unsigned long long total, reserved, used;
    nvmlReturn_t r;
    DEV("nvmlDeviceGetMemoryInfo", device);
    NEED(memory);
    r = memory_values(device, &total, &reserved, &used);
    if (r != NVML_SUCCESS) return r;
    memory->total = total;
    memory->used = used + reserved; /* v1: used includes reserved */
    memory->free = total - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory) {
    unsigned long long total, reserved, used;
    nvmlReturn_t r;
    DEV("nvmlDeviceGetMemoryInfo_v2", device);
    NEED(memory);
    if (memory->version != nvmlMemory_v2) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    r = memory_values(device, &total, &reserved, &used);
    if (r != NVML_SUCCESS) return r;
    memory->total = total;
    memory->reserved = reserved;
    memory->used = used;
    memory->free = total - reserved - used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeMode(nvmlDevice_t device, nvmlComputeMode_t *mode) {
    unsigned int m = NVML_COMPUTEMODE_DEFAULT;
    DEV("nvmlDeviceGetComputeMode", device);
    NEED(mode);
    juint(device->g, "compute_mode", &m);
    *mode = (nvmlComputeMode_t)m;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t device, unsigned int *currentMode, unsigned int *pendingMode) {
    DEV("nvmlDeviceGetMigMode", device);
    NEED(currentMode && pendingMode);
    *currentMode = *pendingMode = NVML_DEVICE_MIG_DISABLE;
    juint(device->g, "mig_mode", currentMode);
    juint(device->g, "mig_mode", pendingMode);
    return NVML_SUCCESS;
}

/* No processes run on simulated GPUs. */
nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                     nvmlProcessInfo_t *infos) {
    DEV("nvmlDeviceGetComputeRunningProcesses_v3", device);
    (void)infos;
    NEED(infoCount);
    *infoCount = 0;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                      nvmlProcessInfo_t *infos) {
    DEV("nvmlDeviceGetGraphicsRunningProcesses_v3", device);
    (void)infos;
    NEED(infoCount);
    *infoCount = 0;
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* NVLink                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* The link's object, or an error: INVALID_ARGUMENT past NVML_NVLINK_MAX_LINKS, NOT_SUPPORTED
 * for a link the device does not have (or a device without NVLink). */
static nvmlReturn_t nvlink(nvmlDevice_t device, unsigned int link, jv **out) {
    jv *links;
    char path[32];
    if (link >= NVML_NVLINK_MAX_LINKS) return NVML_ERROR_INVALID_ARGUMENT;
    links = jget(device->g, "nvlink.links");
    if (!links || links->t != J_ARR || (int)link >= links->n) return NVML_ERROR_NOT_SUPPORTED;
    snprintf(path, sizeof path, "%u", link);
    *out = jget(links, path);
    return *out ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

nvmlReturn_t nvmlDeviceGetNvLinkState(nvmlDevice_t device, unsigned int link, nvmlEnableState_t *isActive) {
    jv *l;
    nvmlReturn_t r;
    DEV("nvmlDeviceGetNvLinkState", device);
    NEED(isActive);
    if ((r = nvlink(device, link, &l)) != NVML_SUCCESS) return r;
    return put_enable(l, "active", isActive);
}

nvmlReturn_t nvmlDeviceGetNvLinkVersion(nvmlDevice_t device, unsigned int link, unsigned int *version) {
    jv *l;
    nvmlReturn_t r;
    DEV("nvmlDeviceGetNvLinkVersion", device);
    NEED(version);
    if ((r = nvlink(device, link, &l)) != NVML_SUCCESS) return r;
    return put_uint(device->g, "nvlink.version", version);
}

nvmlReturn_t nvmlDeviceGetNvLinkCapability(nvmlDevice_t device, unsigned int link, nvmlNvLinkCapability_t capability,
                                           unsigned int *capResult) {
    jv *l;
    nvmlReturn_t r;
    DEV("nvmlDeviceGetNvLinkCapability", device);
    NEED(capResult);
    if ((unsigned)capability >= NVML_NVLINK_CAP_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
    if ((r = nvlink(device, link, &l)) != NVML_SUCCESS) return r;
    /* P2P, sysmem access, P2P atomics, valid: yes; sysmem atomics only over C2C (Grace); no SLI. */
    switch (capability) {
    case NVML_NVLINK_CAP_SLI_BRIDGE: *capResult = 0; break;
    case NVML_NVLINK_CAP_SYSMEM_ATOMICS: *capResult = 0; break;
    default: *capResult = 1; break;
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNvLinkErrorCounter(nvmlDevice_t device, unsigned int link, nvmlNvLinkErrorCounter_t counter,
                                             unsigned long long *counterValue) {
    static const char *const keys[] = {"replay", "recovery", "crc_flit", "crc_data", "ecc_data"};
    jv *l;
    nvmlReturn_t r;
    char path[48];
    DEV("nvmlDeviceGetNvLinkErrorCounter", device);
    NEED(counterValue);
    if ((unsigned)counter >= NVML_NVLINK_ERROR_COUNT) return NVML_ERROR_INVALID_ARGUMENT;
    if ((r = nvlink(device, link, &l)) != NVML_SUCCESS) return r;
    snprintf(path, sizeof path, "errors.%s", keys[counter]);
    return jull(l, path, counterValue) ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

nvmlReturn_t nvmlDeviceGetNvLinkRemoteDeviceType(nvmlDevice_t device, unsigned int link,
                                                 nvmlIntNvLinkDeviceType_t *pNvLinkDeviceType) {
    jv *l;
    nvmlReturn_t r;
    const char *t;
    DEV("nvmlDeviceGetNvLinkRemoteDeviceType", device);
    NEED(pNvLinkDeviceType);
    if ((r = nvlink(device, link, &l)) != NVML_SUCCESS) return r;
    t = jstr(l, "remote");
    if (t && !strcmp(t, "switch"))
        *pNvLinkDeviceType = NVML_NVLINK_DEVICE_TYPE_SWITCH;
    else if (t && !strcmp(t, "gpu"))
        *pNvLinkDeviceType = NVML_NVLINK_DEVICE_TYPE_GPU;
    else
        *pNvLinkDeviceType = NVML_NVLINK_DEVICE_TYPE_UNKNOWN;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetNvLinkRemotePciInfo_v2(nvmlDevice_t device, unsigned int link, nvmlPciInfo_t *pci) {
    jv *l;
    nvmlReturn_t r;
    const char *bus;
    unsigned int dom = 0, b = 0, d = 0, f = 0;
    DEV("nvmlDeviceGetNvLinkRemotePciInfo_v2", device);
    NEED(pci);
    if ((r = nvlink(device, link, &l)) != NVML_SUCCESS) return r;
    bus = jstr(l, "remote_bus_id");
    if (!bus) return NVML_ERROR_NOT_SUPPORTED;
    memset(pci, 0, sizeof *pci);
    if (sscanf(bus, "%x:%x:%x.%x", &dom, &b, &d, &f) != 4) return NVML_ERROR_UNKNOWN;
    pci->domain = dom;
    pci->bus = b;
    pci->device = d;
    pci->pciDeviceId = hexnum(jstr(l, "remote_device_id"));
    snprintf(pci->busId, sizeof pci->busId, "%08X:%02X:%02X.%X", dom, b, d, f);
    snprintf(pci->busIdLegacy, sizeof pci->busIdLegacy, "%04X:%02X:%02X.%X", dom & 0xffff, b, d, f);
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Fabric                                                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    unsigned char uuid[NVML_GPU_FABRIC_UUID_LEN];
    nvmlReturn_t status;
    unsigned int clique;
    unsigned char state;
    unsigned int health_mask;
    unsigned char summary;
} fabric_t;

static nvmlReturn_t fabric(nvmlDevice_t device, fabric_t *f) {
    const char *uuid;
    double v;
    int i = 0;
    const char *p;
    memset(f, 0, sizeof *f);
    if (!jget(device->g, "fabric")) return NVML_ERROR_NOT_SUPPORTED;
    f->state = jnum(device->g, "fabric.state", &v) ? (unsigned char)v : NVML_GPU_FABRIC_STATE_NOT_SUPPORTED;
    if (!code_of(jget(device->g, "fabric.status"), &f->status)) f->status = NVML_SUCCESS;
    juint(device->g, "fabric.clique_id", &f->clique);
    juint(device->g, "fabric.health_mask", &f->health_mask);
    f->summary = jnum(device->g, "fabric.health_summary", &v) ? (unsigned char)v : 0;
    uuid = jstr(device->g, "fabric.cluster_uuid");
    /* "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" -> 16 bytes */
    for (p = uuid; p && *p && i < NVML_GPU_FABRIC_UUID_LEN;) {
        int hi, lo;
        if (*p == '-') {
            p++;
            continue;
        }
        hi = hexval(p[0]);
        lo = p[1] ? hexval(p[1]) : -1;
        if (hi < 0 || lo < 0) break;
        f->uuid[i++] = (unsigned char)(hi << 4 | lo);
        p += 2;
    }
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuFabricInfo(nvmlDevice_t device, nvmlGpuFabricInfo_t *gpuFabricInfo) {
    fabric_t f;
    nvmlReturn_t r;
    DEV("nvmlDeviceGetGpuFabricInfo", device);
    NEED(gpuFabricInfo);
    if ((r = fabric(device, &f)) != NVML_SUCCESS) return r;
    memcpy(gpuFabricInfo->clusterUuid, f.uuid, sizeof f.uuid);
    gpuFabricInfo->status = f.status;
    gpuFabricInfo->cliqueId = f.clique;
    gpuFabricInfo->state = f.state;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuFabricInfoV(nvmlDevice_t device, nvmlGpuFabricInfoV_t *gpuFabricInfo) {
    fabric_t f;
    nvmlReturn_t r;
    unsigned int version;
    DEV("nvmlDeviceGetGpuFabricInfoV", device);
    NEED(gpuFabricInfo);
    version = gpuFabricInfo->version;
    if (version != nvmlGpuFabricInfo_v2 && version != nvmlGpuFabricInfo_v3)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    if ((r = fabric(device, &f)) != NVML_SUCCESS) return r;
    /* v2 is a prefix of v3 (v3 appends healthSummary). */
    memcpy(gpuFabricInfo->clusterUuid, f.uuid, sizeof f.uuid);
    gpuFabricInfo->status = f.status;
    gpuFabricInfo->cliqueId = f.clique;
    gpuFabricInfo->state = f.state;
    gpuFabricInfo->healthMask = f.health_mask;
    if (version == nvmlGpuFabricInfo_v3) gpuFabricInfo->healthSummary = f.summary;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuFabricInfo_v4(nvmlDevice_t device, nvmlGpuFabricInfo_v4_t *gpuFabricInfo) {
    fabric_t f;
    nvmlReturn_t r;
    const char *arch;
    DEV("nvmlDeviceGetGpuFabricInfo_v4", device);
    NEED(gpuFabricInfo);
    if ((r = fabric(device, &f)) != NVML_SUCCESS) return r;
    memset(gpuFabricInfo, 0, sizeof *gpuFabricInfo);
    memcpy(gpuFabricInfo->clusterUuid, f.uuid, sizeof f.uuid);
    gpuFabricInfo->status = f.status;
    gpuFabricInfo->state = f.state;
    gpuFabricInfo->healthMask = f.health_mask;
    gpuFabricInfo->healthSummary = f.summary;
    /* Hopper: unicast + multicast pointer cliques; Blackwell adds logical-endpoint cliques. */
    arch = jstr(device->g, "architecture");
    gpuFabricInfo->numCliques = (arch && !strcmp(arch, "blackwell")) ? 4 : 2;
    for (unsigned int i = 0; i < gpuFabricInfo->numCliques; i++) {
        gpuFabricInfo->cliques[i].type = (unsigned char)i;
        gpuFabricInfo->cliques[i].id = f.clique;
    }
    return NVML_SUCCESS;
}

/* ------------------------------------------------------------------------------------------ */
/* Field values                                                                                */
/* ------------------------------------------------------------------------------------------ */

static int fv_ull(nvmlFieldValue_t *v, int ok, unsigned long long x) {
    if (!ok) return 0;
    v->valueType = NVML_VALUE_TYPE_UNSIGNED_LONG_LONG;
    v->value.ullVal = x;
    return 1;
}

static int fv_uint(nvmlFieldValue_t *v, int ok, unsigned int x) {
    if (!ok) return 0;
    v->valueType = NVML_VALUE_TYPE_UNSIGNED_INT;
    v->value.uiVal = x;
    return 1;
}

static unsigned long long nvlink_total(jv *g, const char *counter, int *ok) {
    jv *links = jget(g, "nvlink.links");
    unsigned long long sum = 0, x;
    char path[48];
    int i;
    *ok = links && links->t == J_ARR;
    for (i = 0; *ok && i < links->n; i++) {
        snprintf(path, sizeof path, "%d.errors.%s", i, counter);
        if (jull(links, path, &x)) sum += x;
    }
    return sum;
}

static unsigned long long ecc_total(nvmlDevice_t d, nvmlMemoryErrorType_t t, nvmlEccCounterType_t c, int *ok) {
    unsigned long long x = 0;
    char base[96];
    jv *obj;
    int i;
    *ok = 0;
    if (!ecc_enabled(d->g) || !ecc_counter_path(t, c, base, sizeof base)) return 0;
    obj = jget(d->g, base);
    if (!obj || obj->t != J_OBJ) return 0;
    for (i = 0; i < obj->n; i++)
        if (obj->items[i]->t == J_NUM) x += (unsigned long long)obj->items[i]->num;
    *ok = 1;
    return x;
}

static void field_value(nvmlDevice_t d, nvmlFieldValue_t *v) {
    jv *g = d->g;
    unsigned int u = 0;
    unsigned long long ull = 0;
    double num = 0;
    int ok = 0, have = 0;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    v->timestamp = (long long)tv.tv_sec * 1000000 + tv.tv_usec;
    v->latencyUsec = 0;
    switch (v->fieldId) {
    case NVML_FI_DEV_ECC_CURRENT: ok = jnum(g, "ecc.current", &num);
        have = fv_uint(v, ok, num != 0); break;
    case NVML_FI_DEV_ECC_PENDING: ok = jnum(g, "ecc.pending", &num);
        have = fv_uint(v, ok, num != 0); break;
    case NVML_FI_DEV_ECC_SBE_VOL_TOTAL:
        ull = ecc_total(d, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_VOLATILE_ECC, &ok);
        have = fv_ull(v, ok, ull);
        break;
    case NVML_FI_DEV_ECC_DBE_VOL_TOTAL:
        ull = ecc_total(d, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC, &ok);
        have = fv_ull(v, ok, ull);
        break;
    case NVML_FI_DEV_ECC_SBE_AGG_TOTAL:
        ull = ecc_total(d, NVML_MEMORY_ERROR_TYPE_CORRECTED, NVML_AGGREGATE_ECC, &ok);
        have = fv_ull(v, ok, ull);
        break;
    case NVML_FI_DEV_ECC_DBE_AGG_TOTAL:
        ull = ecc_total(d, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_AGGREGATE_ECC, &ok);
        have = fv_ull(v, ok, ull);
        break;
    case NVML_FI_DEV_REMAPPED_COR:
        ok = juint(g, "remapped_rows.correctable", &u);
        have = fv_uint(v, ok, u);
        break;
    case NVML_FI_DEV_REMAPPED_UNC:
        ok = juint(g, "remapped_rows.uncorrectable", &u);
        have = fv_uint(v, ok, u);
        break;
    case NVML_FI_DEV_REMAPPED_PENDING:
        ok = juint(g, "remapped_rows.pending", &u);
        have = fv_uint(v, ok, u);
        break;
    case NVML_FI_DEV_REMAPPED_FAILURE:
        ok = juint(g, "remapped_rows.failure", &u);
        have = fv_uint(v, ok, u);
        break;
    case NVML_FI_DEV_NVLINK_LINK_COUNT: {
        jv *links = jget(g, "nvlink.links");
        have = fv_uint(v, links && links->t == J_ARR, links ? (unsigned int)links->n : 0);
        break;
    }
    case NVML_FI_DEV_NVLINK_CRC_FLIT_ERROR_COUNT_TOTAL:
        ull = nvlink_total(g, "crc_flit", &ok);
        have = fv_ull(v, ok, ull);
        break;
    case NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL:
        ull = nvlink_total(g, "crc_data", &ok);
        have = fv_ull(v, ok, ull);
        break;
    case NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL:
        ull = nvlink_total(g, "replay", &ok);
        have = fv_ull(v, ok, ull);
        break;
    case NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL:
        ull = nvlink_total(g, "recovery", &ok);
        have = fv_ull(v, ok, ull);
        break;
    case NVML_FI_DEV_NVLINK_GET_STATE: {
        char path[48];
        snprintf(path, sizeof path, "nvlink.links.%u.active", v->scopeId);
        ok = jnum(g, path, &num);
        have = fv_uint(v, ok, num != 0);
        break;
    }
    case NVML_FI_DEV_PCIE_REPLAY_COUNTER:
        ok = jull(g, "pcie.replay_counter", &ull);
        have = fv_ull(v, ok, ull);
        break;
    case NVML_FI_DEV_GET_GPU_RECOVERY_ACTION:
        ok = juint(g, "recovery_action", &u);
        have = fv_uint(v, ok, u);
        break;
    case NVML_FI_DEV_POWER_INSTANT:
        ok = juint(g, "power_mw", &u);
        have = fv_uint(v, ok, u);
        break;
    case NVML_FI_DEV_GPU_TEMP:
        if (jnum(g, "temperature_c", &num)) {
            v->valueType = NVML_VALUE_TYPE_DOUBLE;
            v->value.dVal = num;
            have = 1;
        }
        break;
    case NVML_FI_DEV_MEMORY_TEMP:
        ok = juint(g, "memory_temperature_c", &u);
        have = fv_uint(v, ok, u);
        break;
    default: break;
    }
    v->nvmlReturn = have ? NVML_SUCCESS : NVML_ERROR_NOT_SUPPORTED;
}

nvmlReturn_t nvmlDeviceGetFieldValues(nvmlDevice_t device, int valuesCount, nvmlFieldValue_t *values) {
    int i;
    DEV("nvmlDeviceGetFieldValues", device);
    NEED(values && valuesCount >= 0);
    for (i = 0; i < valuesCount; i++) field_value(device, &values[i]);
    return NVML_SUCCESS;
}
