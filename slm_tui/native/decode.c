/* One decode step of slm-tui's transformer for one row, in plain C (see __init__.py).

   The same function as `GPT.forward` for one new token (slm_tui/model.py): token (+ learned
   position) embedding; per layer: norm -> fused QKV projection -> rotary (rotate-half
   layout) -> K and V written into the KV cache at `slot` -> attention over the cache slots
   the row may see (optionally a local window) -> output projection + residual -> norm ->
   MLP (SwiGLU or GELU) + residual; final norm; logits from the head. Every ModelConfig
   switch: RMSNorm / LayerNorm (with or without bias), rope / learned positions, biases,
   GQA, tied or untied head, SwiGLU / GELU / GELU-tanh, scaled or unscaled attention scores
   and local attention windows (GPT-Neo).

   Why C: at batch 1 a small model's step is ~35 tiny torch ops a layer, each costing more
   in dispatch than in arithmetic. Here a step is a few loops over the weights. Weights are
   read either as float32 or, when every weight of the model is exactly a bfloat16 value
   (the bundled demo is stored in bf16), as bf16 halves widened to float32 in registers:
   the products are the same numbers, half the bytes are read. All arithmetic is float32.

   Portable: GCC/Clang vector extensions (16 floats), which the compiler maps to AVX-512,
   AVX2 or NEON for the machine it builds on (-march=native). No intrinsics, no OpenMP. */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v16f __attribute__((vector_size(64)));
typedef uint16_t v16h __attribute__((vector_size(32)));
typedef uint32_t v16u __attribute__((vector_size(64)));

/* A weight matrix W (out, in) of nn.Linear, packed for this step: W^T in tiles of TILE
   output columns, [ceil(out/TILE)][in][TILE] (zero-padded), float32 or bf16 (one of the two
   pointers is set). A tile's loop reads its weights as one contiguous stream and keeps TILE
   outputs in registers: no horizontal sums, one load and one FMA per weight. */
#define TILE 64

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
    int act;            /* 0: SwiGLU, 1: GELU (exact, erf), 2: GELU (tanh approximation) */
    int rope;           /* 0: learned positions */
    float norm_eps;
    float attn_scale;   /* 1/sqrt(head_dim), or 1 for models that do not scale */
    const float *tok_emb; /* (vocab, d) float32, as the model holds it */
    const float *pos_emb; /* (context, d) or NULL */
    const float *rope_cos, *rope_sin; /* (context, head_dim/2) */
    const float *normf_w, *normf_b;
    Mat head;           /* (vocab, d), packed */
    const Layer *layers;
} Model;

static inline v16f load16(const float *p) {
    v16f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void store16(float *p, v16f v) { memcpy(p, &v, sizeof v); }

static inline v16f load16h(const uint16_t *p) {
    v16h h;
    memcpy(&h, p, sizeof h);
    v16u u = __builtin_convertvector(h, v16u) << 16;
    v16f f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* y[o] (+)= W[o, :] . x + b[o] for o < out, W packed (see Mat). Two sets of accumulators
   (even and odd inputs) keep eight independent FMA chains in flight. */
static void matvec(float *y, const Mat *w, const float *x, const float *b, int out, int in,
                   int accumulate) {
    int tiles = (out + TILE - 1) / TILE;
    for (int t = 0; t < tiles; t++) {
        v16f a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0};
        int i = 0;
        if (w->bf16) {
            const uint16_t *p = w->bf16 + (long)t * in * TILE;
            for (; i + 2 <= in; i += 2, p += 2 * TILE) {
                v16f x0 = (v16f){0} + x[i], x1 = (v16f){0} + x[i + 1];
                a0 += load16h(p) * x0;
                a1 += load16h(p + 16) * x0;
                a2 += load16h(p + 32) * x0;
                a3 += load16h(p + 48) * x0;
                b0 += load16h(p + 64) * x1;
                b1 += load16h(p + 80) * x1;
                b2 += load16h(p + 96) * x1;
                b3 += load16h(p + 112) * x1;
            }
            if (i < in) {
                v16f x0 = (v16f){0} + x[i];
                a0 += load16h(p) * x0;
                a1 += load16h(p + 16) * x0;
                a2 += load16h(p + 32) * x0;
                a3 += load16h(p + 48) * x0;
            }
        } else {
            const float *p = w->f32 + (long)t * in * TILE;
            for (; i + 2 <= in; i += 2, p += 2 * TILE) {
                v16f x0 = (v16f){0} + x[i], x1 = (v16f){0} + x[i + 1];
                a0 += load16(p) * x0;
                a1 += load16(p + 16) * x0;
                a2 += load16(p + 32) * x0;
                a3 += load16(p + 48) * x0;
                b0 += load16(p + 64) * x1;
                b1 += load16(p + 80) * x1;
                b2 += load16(p + 96) * x1;
                b3 += load16(p + 112) * x1;
            }
            if (i < in) {
                v16f x0 = (v16f){0} + x[i];
                a0 += load16(p) * x0;
                a1 += load16(p + 16) * x0;
                a2 += load16(p + 32) * x0;
                a3 += load16(p + 48) * x0;
            }
        }
        float acc[TILE];
        store16(acc, a0 + b0);
        store16(acc + 16, a1 + b1);
        store16(acc + 32, a2 + b2);
        store16(acc + 48, a3 + b3);
        int o0 = t * TILE, n = out - o0 < TILE ? out - o0 : TILE;
        for (int k = 0; k < n; k++) {
            float v = acc[k] + (b ? b[o0 + k] : 0.0f);
            y[o0 + k] = accumulate ? y[o0 + k] + v : v;
        }
    }
}

static float dot(const float *a, const float *b, int n) {
    v16f acc = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16) acc += load16(a + i) * load16(b + i);
    float s = 0.0f;
    for (int k = 0; k < 16; k++) s += acc[k];
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

/* One head of one row: softmax(q . k_s * scale) over slots first..slot (a slot before
   `slot` with key_mask[s] == 0 left out; key_mask may be NULL), y = the weighted sum of the
   v_s. kh, vh: the head's keys and values, hd floats a slot; scores: slot + 1 floats. */
static void head_attention(const float *q, const float *kh, const float *vh,
                           const uint8_t *key_mask, int first, int slot, int hd, float scale,
                           float *scores, float *y) {
    float top = -INFINITY;
    for (int s = first; s <= slot; s++) {
        if (key_mask && s < slot && !key_mask[s]) {
            scores[s] = -INFINITY;
            continue;
        }
        scores[s] = dot(q, kh + (long)s * hd, hd) * scale;
        if (scores[s] > top) top = scores[s];
    }
    float total = 0.0f;
    for (int s = first; s <= slot; s++) {
        float e = scores[s] == -INFINITY ? 0.0f : expf(scores[s] - top);
        scores[s] = e;
        total += e;
    }
    for (int i = 0; i < hd; i++) y[i] = 0.0f;
    for (int s = first; s <= slot; s++) {
        float p = scores[s] / total;
        if (p == 0.0f) continue;
        const float *v = vh + (long)s * hd;
        for (int i = 0; i < hd; i++) y[i] += p * v[i];
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

    memcpy(x, m->tok_emb + (long)token * d, sizeof(float) * d);
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
        for (int j = 0; j < H; j++)
            head_attention(qkv + j * hd, kc + (j / group) * head_stride,
                           vc + (j / group) * head_stride, key_mask, first, slot, hd,
                           m->attn_scale, scores, attn + j * hd);
        matvec(x, &L->wo, attn, L->bo, d, d, 1);
        norm(xn, x, L->norm2_w, L->norm2_b, d, m->layernorm, m->norm_eps);
        int hidden = m->hidden;
        if (m->act == 0) {
            matvec(h, &L->wfc, xn, L->bfc, 2 * hidden, d, 0);
            for (int i = 0; i < hidden; i++) {
                float g = h[i];
                h[i] = g / (1.0f + expf(-g)) * h[hidden + i];
            }
        } else if (m->act == 1) {
            matvec(h, &L->wfc, xn, L->bfc, hidden, d, 0);
            for (int i = 0; i < hidden; i++)
                h[i] = 0.5f * h[i] * (1.0f + erff(h[i] * 0.70710678118654752f));
        } else {
            matvec(h, &L->wfc, xn, L->bfc, hidden, d, 0);
            for (int i = 0; i < hidden; i++) {
                float u = h[i];
                h[i] = 0.5f * u * (1.0f + tanhf(0.7978845608028654f * (u + 0.044715f * u * u * u)));
            }
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

/* Attention of one decode step for B rows (the batched torch step's attention, where a row
   attends to its own slots only): row b, head j reads its keys and values at slots
   first[b] .. slot of its cache rows (layout (rows, Hkv, S, hd): `row_stride`, `head_stride`
   floats), `window` > 0 narrowing that to the newest `window` slots. The arithmetic is the
   one-row step's (`head_attention`), so a row gets the numbers it gets alone. q: (B, H, hd) rows `q_row` floats apart, heads hd apart; out: (B, H, hd). The
   cost follows each row's own length, not the longest row's (a masked SDPA over the shared
   slots reads them all). */
int slm_batch_attention(const float *q, long q_row, const float *k_cache, const float *v_cache,
                        long row_stride, long head_stride, const int *first, int slot, int B,
                        int H, int Hkv, int hd, int window, float scale, float *out) {
    if (B < 1 || H < 1 || Hkv < 1 || H % Hkv != 0 || slot < 0) return 1;
    int group = H / Hkv;
    /* On the heap: a context may be 131,072 slots (512 KB), more than some threads' stacks. */
    float *scores = malloc(sizeof(float) * ((size_t)slot + 1));
    if (!scores) return 3;
    int code = 0;
    for (int b = 0; b < B && code == 0; b++) {
        int lo = first[b];
        if (window > 0 && slot + 1 - window > lo) lo = slot + 1 - window;
        if (lo < 0 || lo > slot) {
            code = 2;
            break;
        }
        for (int j = 0; j < H; j++) {
            long head = (long)b * row_stride + (long)(j / group) * head_stride;
            head_attention(q + (long)b * q_row + (long)j * hd, k_cache + head, v_cache + head,
                           0, lo, slot, hd, scale, scores, out + ((long)b * H + j) * hd);
        }
    }
    free(scores);
    return code;
}
