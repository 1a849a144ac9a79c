/* Loads a library built from kernel.cu and runs gpuship_selftest() in it: exit 0 when the GPU ran the kernel. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char** argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s LIBRARY\n", argv[0]); return 2; }
    void* lib = dlopen(argv[1], RTLD_NOW);
    if (!lib) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 3; }
    int (*selftest)(void) = (int (*)(void))dlsym(lib, "gpuship_selftest");
    if (!selftest) { fprintf(stderr, "dlsym: %s\n", dlerror()); return 3; }
    int rc = selftest();
    printf("%s: gpuship_selftest() = %d\n", argv[1], rc);
    return rc == 0 ? 0 : 1;
}
