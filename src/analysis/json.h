/* analysis/json.h - a small streaming JSON writer with correct string escaping.
 * The writer tracks nesting to place commas; not thread-safe; errors are sticky (checked once
 * at the end with cb_json_finish). */
#ifndef CB_ANALYSIS_JSON_H
#define CB_ANALYSIS_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define CB_JSON_MAX_DEPTH 32

typedef struct cb_json {
    FILE *out;
    int depth;
    bool first[CB_JSON_MAX_DEPTH]; /* no member written yet at this depth */
    bool pending_key;              /* a key was written, its value comes next */
    int indent;                    /* spaces per level; 0 = compact */
    int error;                     /* 0 or CB_EIO/CB_EINVAL */
} cb_json;

void cb_json_init(cb_json *j, FILE *out, int indent);
void cb_json_object_begin(cb_json *j);
void cb_json_object_end(cb_json *j);
void cb_json_array_begin(cb_json *j);
void cb_json_array_end(cb_json *j);
void cb_json_key(cb_json *j, const char *key);
void cb_json_string(cb_json *j, const char *s);     /* NULL writes null */
void cb_json_int(cb_json *j, int64_t v);
void cb_json_uint(cb_json *j, uint64_t v);
void cb_json_double(cb_json *j, double v);          /* non-finite writes null */
void cb_json_bool(cb_json *j, bool v);
void cb_json_null(cb_json *j);
int cb_json_finish(cb_json *j);                     /* 0 or the first error; adds a newline */

#endif
