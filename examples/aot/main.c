/* Trains the W2 MLP from C with the jitgrad AOT library libmlp (see mlp.py):
 *
 *     python3 mlp.py build/mlp
 *     cc -std=c11 -O2 -ffp-contract=off main.c -Ibuild/mlp -Lbuild/mlp -lmlp -Wl,-rpath,build/mlp -o train
 *     ./train build/mlp 10
 *
 * reads the starting parameters and data from DIR, runs STEPS steps of SGD calling
 * mlp_grad_loss, prints the loss before each step (mlp_loss) and writes the final
 * parameters to DIR/final_NAME.f32. */
#include <stdio.h>
#include <stdlib.h>
#include "mlp.h"

#define LEARNING_RATE 0.1f

static float *read_array(const char *dir, const char *name, size_t count) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.f32", dir, name);
    FILE *f = fopen(path, "rb");
    float *data = malloc(count * sizeof(float));
    if (f == NULL || data == NULL || fread(data, sizeof(float), count, f) != count) {
        fprintf(stderr, "cannot read %zu floats from %s\n", count, path);
        exit(1);
    }
    fclose(f);
    return data;
}

static void write_array(const char *dir, const char *name, const float *data, size_t count) {
    char path[4096];
    snprintf(path, sizeof path, "%s/final_%s.f32", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(data, sizeof(float), count, f) != count) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static void check(int code, const char *what) {
    if (code != MLP_OK) {
        fprintf(stderr, "%s failed with error %d\n", what, code);
        exit(1);
    }
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "build/mlp";
    int steps = argc > 2 ? atoi(argv[2]) : 10;
    const char *names[4] = {"W1", "b1", "W2", "b2"};
    const size_t sizes[4] = {MLP_GRAD_LOSS_IN0_SIZE, MLP_GRAD_LOSS_IN1_SIZE, MLP_GRAD_LOSS_IN2_SIZE,
                             MLP_GRAD_LOSS_IN3_SIZE};
    float *params[4], *grads[4];
    for (int k = 0; k < 4; k++) {
        params[k] = read_array(dir, names[k], sizes[k]);
        grads[k] = malloc(sizes[k] * sizeof(float));
    }
    float *x = read_array(dir, "x", MLP_GRAD_LOSS_IN4_SIZE);
    float *y = read_array(dir, "y", MLP_GRAD_LOSS_IN5_SIZE);
    for (int step = 0; step < steps; step++) {
        float loss;
        check(mlp_loss(params[0], params[1], params[2], params[3], x, y, &loss, NULL), "mlp_loss");
        printf("step %d loss %.9g\n", step, loss);
        check(mlp_grad_loss(params[0], params[1], params[2], params[3], x, y,
                            grads[0], grads[1], grads[2], grads[3], NULL), "mlp_grad_loss");
        for (int k = 0; k < 4; k++)
            for (size_t i = 0; i < sizes[k]; i++)
                params[k][i] = params[k][i] - LEARNING_RATE * grads[k][i];
    }
    for (int k = 0; k < 4; k++) write_array(dir, names[k], params[k], sizes[k]);
    return 0;
}
