/* tests/fuzz/fuzz_config.c - libFuzzer target for the config loader.
 *
 * What: feeds arbitrary bytes through cb_doc_load_string, a few --set assignments taken from the
 * input's first line, cb_spec_build and the YAML writers, and destroys everything; any crash,
 * leak, or sanitizer report is a bug. Design: the registry (built-ins only; plugins are not
 * allowed, so plugin_paths in the input are listed and never dlopen'ed: the policy is fuzzed
 * too) is created once per process; static state is acceptable in a fuzz
 * target, which is a process of its own. Thread-safety: libFuzzer calls the target from one
 * thread. Ownership: every doc and spec is destroyed before returning.
 *
 * Build and run: cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCB_FUZZ=ON &&
 *   cmake --build build-fuzz --target fuzz_config && ./build-fuzz/fuzz_config tests/fuzz/corpus
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cfgtree.h"
#include "core/registry.h"
#include "stages/builtin.h"
#include "core/spec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static cb_registry *fuzz_registry(void) {
    static cb_registry *reg;
    if (!reg) {
        cb_error err;
        cb_error_clear(&err);
        if (cb_builtin_registry(&reg, &err)) {
            fprintf(stderr, "fuzz_config: registry: %s\n", err.msg);
            return NULL;
        }
    }
    return reg;
}

/* Writes to /dev/null-like sink so the writers run without filling the disk. */
static void exercise_writers(const cb_doc *doc, const cb_spec *spec) {
    FILE *sink = fopen("/dev/null", "w");
    if (!sink) return;
    cb_node_write_yaml(doc->root, sink);
    if (spec) {
        cb_spec_write_yaml(spec, sink);
        cb_graph_write_mermaid(spec, sink);
        cb_graph_write_dot(spec, sink);
    }
    fclose(sink);
}

/* The written YAML of a loaded document must load again. */
static void check_roundtrip(const cb_doc *doc) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return;
    cb_node_write_yaml(doc->root, f);
    fclose(f);
    if (len > (16u << 20)) { /* deep alias copies can write more than a config may hold */
        free(buf);
        return;
    }
    cb_doc *again = NULL;
    cb_error err;
    cb_error_clear(&err);
    int rc = cb_doc_load_string(buf, len, "roundtrip", &again, &err);
    if (rc && rc != CB_ENOMEM) {
        fprintf(stderr, "fuzz_config: written YAML does not load: %s\n---\n%s\n", err.msg, buf);
        __builtin_trap();
    }
    cb_doc_destroy(again);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    cb_registry *reg = fuzz_registry();
    if (!reg) return 0;
    const char *text = (const char *)data;
    cb_doc *doc = NULL;
    cb_error err;
    cb_error_clear(&err);
    if (cb_doc_load_string(text, size, "fuzz.yaml", &doc, &err) != 0) return 0;
    check_roundtrip(doc);

    /* Inputs whose first line starts with "#set " carry one --set assignment. */
    if (size > 5 && memcmp(text, "#set ", 5) == 0) {
        const char *nl = memchr(text, '\n', size);
        size_t n = (size_t)((nl ? nl : text + size) - (text + 5));
        char assignment[256];
        if (n < sizeof assignment && !memchr(text + 5, '\0', n)) {
            memcpy(assignment, text + 5, n);
            assignment[n] = '\0';
            cb_doc_set(doc, assignment, &err);
        }
    }

    /* plugin_paths are never loaded: the registry does not allow plugins. */
    if (cb_registry_plugins_allowed(reg)) __builtin_trap();
    cb_spec *spec = NULL;
    cb_error_clear(&err);
    if (cb_spec_build(doc, reg, &spec, &err) == 0) {
        exercise_writers(doc, spec);
        cb_spec_destroy(spec);
    } else {
        char msg[2048];
        cb_error_format(&err, msg, sizeof msg);
        exercise_writers(doc, NULL);
    }
    cb_doc_destroy(doc);
    return 0;
}
