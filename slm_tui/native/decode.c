/* One decode step of slm-tui's transformer for one row, in plain C (see __init__.py).

   The same function as `GPT.forward` for one new token (slm_tui/model.py): token (+ learned
   position) embedding; per layer: norm -> fused QKV projection -> rotary (rotate-half
   layout) -> K and V written into the KV cache at `slot` -> attention over the cache slots
   the row may see (optionally a local window) -> output projection + residual -> norm ->
   MLP (SwiGLU or GELU) + residual; final norm; logits from the head. Every ModelConfig
   switch: RMSNorm / LayerNorm (with or without bias), rope / learned positions, biases,
   GQA, tied or untied head.

   Why C: at batch 1 a small model's step is ~35 tiny torch ops a layer, each costing more
   in dispatch than in arithmetic. Here a step is a few loops over the weights. Weights are
   read either as float32 or, when every weight of the model is exactly a bfloat16 value
   (the bundled demo is stored in bf16), as bf16 halves widened to float32 in registers:
   the products are the same numbers, half the bytes are read. All arithmetic is float32.

   Portable: GCC/Clang vector extensions (16 floats), which the compiler maps to AVX-512,
   AVX2 or NEON for the machine it builds on (-march=native). No intrinsics, no OpenMP. */

#include <math.h>
#include <stdint.h>
#include <string.h>

typedef float v16f __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));

/* A weight matrix (out, in), row-major like torch's nn.Linear.weight: float32 or bf16. */
typedef struct {
    const float *f32;
    const uint16_t *bf16;
} Mat;

typedef struct {
    const float *norm1_w, *norm1_b;
    Mat wqkv;
    const float *bqkv;
    Mat wo;
    const float *bo;
    const float *norm2_w, *norm2_b;
    Mat wfc;
    const float *bfc;
    Mat wp;
    const float *bp;
    int window; /* attend to at most this many newest slots (0: all) */
} Layer;

typedef struct {
    int n_layer, d, n_head, n_kv_head, head_dim, hidden, vocab, context;
    int layernorm;      /* 0: RMSNorm, 1: LayerNorm */
    int swiglu;         /* 0: GELU (exact, erf) */
    int rope;           /* 0: learned positions */
    float norm_eps;
    float attn_scale;   /* 1/sqrt(head_dim), or 1 for models that do not scale */
    Mat tok_emb;        /* (vocab, d) */
    const float *pos_emb; /* (context, d) or NULL */
    const float *rope_cos, *rope_sin; /* (context, head_dim/2) */
    const float *normf_w, *normf_b;
    Mat head;           /* (vocab, d) */
    const Layer *layers;
} Model;

static inline v16f load16(const float *p) {
    v16f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline v16f load16h(const uint16_t *p) {
    v16h h;
    memcpy(&h, p, sizeof h);
    v16u u = __builtin_convertvector(h, v16u) << 16;
    v16f f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline float hsum(v16f v) {
    float s = 0.0f;
    for (int i = 0; i < 16; i++) s += v[i];
    return s;
}

static inline float bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* y[o] (+)= W[o, :] . x + b[o], o < out; four rows at a time share each load of x. */
static void matvec(float *y, const Mat *w, const float *x, const float *b, int out, int in,
                   int accumulate) {
    int n16 = in & ~15;
    int o = 0;
    for (; o + 4 <= out; o += 4) {
        v16f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        float t0 = 0, t1 = 0, t2 = 0, t3 = 0;
        if (w->bf16) {
            const uint16_t *r0 = w->bf16 + (long)o * in, *r1 = r0 + in, *r2 = r1 + in,
                           *r3 = r2 + in;
            for (int i = 0; i < n16; i += 16) {
                v16f xv = load16(x + i);
                a0 += load16h(r0 + i) * xv;
                a1 += load16h(r1 + i) * xv;
                a2 += load16h(r2 + i) * xv;
                a3 += load16h(r3 + i) * xv;
            }
            for (int i = n16; i < in; i++) {
                t0 += bf16_to_f32(r0[i]) * x[i];
                t1 += bf16_to_f32(r1[i]) * x[i];
                t2 += bf16_to_f32(r2[i]) * x[i];
                t3 += bf16_to_f32(r3[i]) * x[i];
            }
        } else {
            const float *r0 = w->f32 + (long)o * in, *r1 = r0 + in, *r2 = r1 + in, *r3 = r2 + in;
            for (int i = 0; i < n16; i += 16) {
                v16f xv = load16(x + i);
                a0 += load16(r0 + i) * xv;
                a1 += load16(r1 + i) * xv;
                a2 += load16(r2 + i) * xv;
                a3 += load16(r3 + i) * xv;
            }
            for (int i = n16; i < in; i++) {
                t0 += r0[i] * x[i];
                t1 += r1[i] * x[i];
                t2 += r2[i] * x[i];
                t3 += r3[i] * x[i];
            }
        }
        float s[4] = {hsum(a0) + t0, hsum(a1) + t1, hsum(a2) + t2, hsum(a3) + t3};
        for (int k = 0; k < 4; k++) {
            float v = s[k] + (b ? b[o + k] : 0.0f);
            y[o + k] = accumulate ? y[o + k] + v : v;
        }
    }
    for (; o < out; o++) {
        v16f a = {0};
        float t = 0;
        if (w->bf16) {
            const uint16_t *r = w->bf16 + (long)o * in;
            for (int i = 0; i < n16; i += 16) a += load16h(r + i) * load16(x + i);
            for (int i = n16; i < in; i++) t += bf16_to_f32(r[i]) * x[i];
        } else {
            const float *r = w->f32 + (long)o * in;
            for (int i = 0; i < n16; i += 16) a += load16(r + i) * load16(x + i);
            for (int i = n16; i < in; i++) t += r[i] * x[i];
        }
        float v = hsum(a) + t + (b ? b[o] : 0.0f);
        y[o] = accumulate ? y[o] + v : v;
    }
}

static void norm(float *out, const float *x, const float *w, const float *b, int d,
                 int layernorm, float eps) {
    if (layernorm) {
        float mean = 0.0f;
        for (int i = 0; i < d; i++) mean += x[i];
        mean /= d;
        float var = 0.0f;
        for (int i = 0; i < d; i++) var += (x[i] - mean) * (x[i] - mean);
        float inv = 1.0f / sqrtf(var / d + eps);
        for (int i = 0; i < d; i++)
            out[i] = (x[i] - mean) * inv * (w ? w[i] : 1.0f) + (b ? b[i] : 0.0f);
    } else {
        float ss = 0.0f;
        for (int i = 0; i < d; i++) ss += x[i] * x[i];
        float inv = 1.0f / sqrtf(ss / d + eps);
        for (int i = 0; i < d; i++) out[i] = x[i] * inv * w[i];
    }
}

/* Rotate-half rotary: pairs (v[i], v[i + half]). */
static void rotate(float *v, const float *cos_row, const float *sin_row, int half) {
    for (int i = 0; i < half; i++) {
        float a = v[i], b = v[i + half], c = cos_row[i], s = sin_row[i];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
    }
}

/* work: at least 3*d + 2*hidden + (n_head + 2*n_kv_head)*head_dim + context floats.
   k_cache/v_cache: this row's (L, ..., Hkv, S, hd) entries; layer_stride and head_stride are
   in floats, S = max_len slots of head_dim each. key_mask: NULL (every slot < slot is
   visible) or slot+1 bytes (1 = visible; the own slot always is). Returns 0. */
int slm_decode_step(const Model *m, int token, int pos, int slot, float *k_cache,
                    float *v_cache, long layer_stride, long head_stride,
                    const uint8_t *key_mask, float *logits, float *work) {
    const int d = m->d, H = m->n_head, Hkv = m->n_kv_head, hd = m->head_dim;
    const int half = hd / 2, group = H / Hkv;
    float *x = work, *xn = x + d, *attn = xn + d;
    float *qkv = attn + d;
    float *h = qkv + (H + 2 * Hkv) * hd;
    float *scores = h + 2 * m->hidden;

    if (m->tok_emb.bf16) {
        const uint16_t *e = m->tok_emb.bf16 + (long)token * d;
        for (int i = 0; i < d; i++) x[i] = bf16_to_f32(e[i]);
    } else {
        memcpy(x, m->tok_emb.f32 + (long)token * d, sizeof(float) * d);
    }
    if (m->pos_emb)
        for (int i = 0; i < d; i++) x[i] += m->pos_emb[(long)pos * d + i];
    const float *cr = m->rope ? m->rope_cos + (long)pos * half : 0;
    const float *sr = m->rope ? m->rope_sin + (long)pos * half : 0;

    for (int l = 0; l < m->n_layer; l++) {
        const Layer *L = &m->layers[l];
        norm(xn, x, L->norm1_w, L->norm1_b, d, m->layernorm, m->norm_eps);
        matvec(qkv, &L->wqkv, xn, L->bqkv, (H + 2 * Hkv) * hd, d, 0);
        if (m->rope)
            for (int j = 0; j < H + Hkv; j++) rotate(qkv + j * hd, cr, sr, half);
        float *kc = k_cache + l * layer_stride, *vc = v_cache + l * layer_stride;
        for (int j = 0; j < Hkv; j++) {
            memcpy(kc + j * head_stride + (long)slot * hd, qkv + (H + j) * hd, sizeof(float) * hd);
            memcpy(vc + j * head_stride + (long)slot * hd, qkv + (H + Hkv + j) * hd,
                   sizeof(float) * hd);
        }
        int first = 0;
        if (L->window > 0 && slot + 1 > L->window) first = slot + 1 - L->window;
        for (int j = 0; j < H; j++) {
            const float *q = qkv + j * hd;
            const float *kh = kc + (j / group) * head_stride, *vh = vc + (j / group) * head_stride;
            float top = -INFINITY;
            for (int s = first; s <= slot; s++) {
                if (key_mask && s < slot && !key_mask[s]) {
                    scores[s] = -INFINITY;
                    continue;
                }
                const float *k = kh + (long)s * hd;
                float dot = 0.0f;
                for (int i = 0; i < hd; i++) dot += q[i] * k[i];
                scores[s] = dot * m->attn_scale;
                if (scores[s] > top) top = scores[s];
            }
            float total = 0.0f;
            for (int s = first; s <= slot; s++) {
                float e = scores[s] == -INFINITY ? 0.0f : expf(scores[s] - top);
                scores[s] = e;
                total += e;
            }
            float *y = attn + j * hd;
            for (int i = 0; i < hd; i++) y[i] = 0.0f;
            for (int s = first; s <= slot; s++) {
                float p = scores[s] / total;
                if (p == 0.0f) continue;
                const float *v = vh + (long)s * hd;
                for (int i = 0; i < hd; i++) y[i] += p * v[i];
            }
        }
        matvec(x, &L->wo, attn, L->bo, d, d, 1);
        norm(xn, x, L->norm2_w, L->norm2_b, d, m->layernorm, m->norm_eps);
        int hidden = m->hidden;
        if (m->swiglu) {
            matvec(h, &L->wfc, xn, L->bfc, 2 * hidden, d, 0);
            for (int i = 0; i < hidden; i++) {
                float g = h[i];
                h[i] = g / (1.0f + expf(-g)) * h[hidden + i];
            }
        } else {
            matvec(h, &L->wfc, xn, L->bfc, hidden, d, 0);
            for (int i = 0; i < hidden; i++)
                h[i] = 0.5f * h[i] * (1.0f + erff(h[i] * 0.70710678118654752f));
        }
        matvec(x, &L->wp, h, L->bp, d, hidden, 1);
    }
    norm(xn, x, m->normf_w, m->normf_b, d, m->layernorm, m->norm_eps);
    matvec(logits, &m->head, xn, 0, m->vocab, d, 0);
    return 0;
}

/* The sizes the Python side checks its ctypes structs against. */
int slm_sizeof_model(void) { return (int)sizeof(Model); }
int slm_sizeof_layer(void) { return (int)sizeof(Layer); }
