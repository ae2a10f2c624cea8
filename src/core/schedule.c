/* core/schedule.c - open-loop arrival schedules (see schedule.h).
 *
 * Design: the whole schedule is generated before timing starts (as MLPerf LoadGen does), so the
 * dispatcher only reads offsets. Every kind puts its first arrival at offset 0 (replay times are
 * made relative to the first one, constant offset 0 is 0/rate); poisson and gamma then add
 * random gaps, accumulated in long double and rounded to whole nanoseconds per arrival, so
 * rounding never accumulates. Constant offsets are i * 1e9 / rate computed per index (long
 * double), never by adding gaps. The count is max_queries when > 0, else every arrival strictly
 * before timeout_ns; a schedule past CB_SCHEDULE_MAX_ARRIVALS (100 million, 800 MB of offsets)
 * is a configuration error, detected from the expected count before anything is allocated.
 * Replay files are read by a bounded cursor parser: only the first column is kept (at most
 * CB_REPLAY_FIELD_MAX bytes), the rest of each line is skipped up to CB_REPLAY_LINE_MAX bytes
 * a line (longer is an error, so a file with no line ends, /dev/zero, cannot hang). Decimal
 * times are converted to nanoseconds exactly (integer and fraction parsed separately), so
 * epoch timestamps keep full precision; exponent notation goes through strtold.
 * Thread-safety: pure functions; the only state is the caller's cb_rng or a local one.
 * Ownership: *offsets_ns is cb_malloc'd for the caller on success; on error nothing is returned
 * and nothing leaks.
 */
#include "core/schedule.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/alloc.h"

#define CB_SCHEDULE_MAX_ARRIVALS ((size_t)100000000)
#define CB_REPLAY_FIELD_MAX 256
#define CB_REPLAY_LINE_MAX ((size_t)1 << 20)

double cb_rng_gamma(cb_rng *r, double shape) {
    if (!(shape > 0.0) || !isfinite(shape)) return NAN;
    if (shape < 1.0) {
        /* Gamma(a) = Gamma(a + 1) * U^(1/a) (Marsaglia & Tsang, section 6). */
        double g = cb_rng_gamma(r, shape + 1.0);
        return g * pow(cb_rng_uniform(r), 1.0 / shape);
    }
    const double d = shape - 1.0 / 3.0;
    const double c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x, v;
        do {
            x = cb_rng_normal(r);
            v = 1.0 + c * x;
        } while (v <= 0.0);
        v = v * v * v;
        double u = cb_rng_uniform(r);
        double x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2) return d * v;
        if (log(u) < 0.5 * x2 + d * (1.0 - v + log(v))) return d * v;
    }
}

/* ---- generated schedules ---- */

static void error_at_loadgen(cb_error *err, const cb_loadgen_spec *lg) {
    if (lg->node) cb_error_at(err, lg->node->file, lg->node->line, lg->node->col);
}

static int too_many(const cb_loadgen_spec *lg, double count, cb_error *err) {
    cb_error_set(err, CB_ECONFIG,
                 "loadgen: the schedule would hold %.0f arrivals, more than the limit of %zu; "
                 "lower rate, timeout or max_queries",
                 count, CB_SCHEDULE_MAX_ARRIVALS);
    error_at_loadgen(err, lg);
    return CB_ECONFIG;
}

/* Gap in ns before the next arrival. */
static long double next_gap_ns(cb_loadgen_kind kind, cb_rng *rng, double rate, double shape) {
    const long double mean_ns = 1e9L / (long double)rate;
    if (kind == CB_LOADGEN_GAMMA) return (long double)cb_rng_gamma(rng, shape) * mean_ns / shape;
    return -mean_ns * (long double)log(cb_rng_uniform(rng)); /* poisson */
}

static int generate_rate(const cb_loadgen_spec *lg, int64_t **offsets_ns, size_t *n,
                         cb_error *err) {
    const double rate = lg->rate_qps;
    if (!(rate > 0.0) || !isfinite(rate)) {
        cb_error_set(err, CB_ECONFIG, "loadgen.config.rate: must be a finite number > 0, "
                                      "got %g", rate);
        error_at_loadgen(err, lg);
        return CB_ECONFIG;
    }
    const double shape = lg->kind == CB_LOADGEN_GAMMA ? lg->burstiness : 1.0;
    if (!(shape > 0.0) || !isfinite(shape)) {
        cb_error_set(err, CB_ECONFIG, "loadgen.config.burstiness: must be > 0, got %g", shape);
        error_at_loadgen(err, lg);
        return CB_ECONFIG;
    }
    const bool bounded = lg->max_queries > 0;
    if (!bounded && lg->timeout_ns <= 0) {
        cb_error_set(err, CB_ECONFIG, "loadgen: neither max_queries nor timeout bounds the "
                                      "schedule");
        error_at_loadgen(err, lg);
        return CB_ECONFIG;
    }
    /* Capacity: exact when bounded by max_queries; otherwise the expected count plus slack. */
    double expected = bounded ? (double)lg->max_queries : rate * ((double)lg->timeout_ns / 1e9);
    if (expected > (double)CB_SCHEDULE_MAX_ARRIVALS) return too_many(lg, expected, err);
    size_t cap = bounded ? (size_t)lg->max_queries : (size_t)(expected * 1.05) + 1024;
    if (cap > CB_SCHEDULE_MAX_ARRIVALS + 1) cap = CB_SCHEDULE_MAX_ARRIVALS + 1;
    int64_t *off = cb_malloc(cap * sizeof *off);
    if (!off) return cb_error_set(err, CB_ENOMEM, "loadgen: out of memory for %zu arrivals", cap);

    cb_rng rng;
    cb_rng_seed(&rng, lg->seed);
    size_t count = 0;
    long double t = 0.0L;
    for (;;) {
        if (bounded && count == (size_t)lg->max_queries) break;
        int64_t o;
        if (lg->kind == CB_LOADGEN_CONSTANT) {
            o = (int64_t)llroundl((long double)count * 1e9L / (long double)rate);
        } else {
            if (count > 0) t += next_gap_ns(lg->kind, &rng, rate, shape);
            if (t >= 9.2e18L) { /* past INT64_MAX ns: only reachable with absurd rates */
                cb_free(off);
                return too_many(lg, (double)count + 1.0, err);
            }
            o = (int64_t)llroundl(t);
        }
        if (!bounded && o >= lg->timeout_ns) break;
        if (count == cap) {
            if (cap > CB_SCHEDULE_MAX_ARRIVALS) {
                cb_free(off);
                return too_many(lg, (double)count + 1.0, err);
            }
            size_t ncap = cap * 2 > CB_SCHEDULE_MAX_ARRIVALS + 1 ? CB_SCHEDULE_MAX_ARRIVALS + 1
                                                                 : cap * 2;
            int64_t *grown = cb_realloc(off, ncap * sizeof *off);
            if (!grown) {
                cb_free(off);
                return cb_error_set(err, CB_ENOMEM, "loadgen: out of memory for %zu arrivals",
                                    ncap);
            }
            off = grown;
            cap = ncap;
        }
        off[count++] = o;
    }
    if (count > CB_SCHEDULE_MAX_ARRIVALS) {
        cb_free(off);
        return too_many(lg, (double)count, err);
    }
    *offsets_ns = off;
    *n = count;
    return CB_OK;
}

int cb_schedule_generate(const cb_loadgen_spec *lg, int64_t **offsets_ns, size_t *n,
                         cb_error *err) {
    if (!lg || !offsets_ns || !n)
        return cb_error_set(err, CB_EINVAL, "cb_schedule_generate: NULL argument");
    *offsets_ns = NULL;
    *n = 0;
    switch (lg->kind) {
    case CB_LOADGEN_POISSON:
    case CB_LOADGEN_CONSTANT:
    case CB_LOADGEN_GAMMA:
        return generate_rate(lg, offsets_ns, n, err);
    case CB_LOADGEN_REPLAY: {
        if (!lg->file || !lg->file[0]) {
            cb_error_set(err, CB_ECONFIG, "loadgen.config.file: replay needs a CSV file");
            error_at_loadgen(err, lg);
            return CB_ECONFIG;
        }
        size_t max_n = lg->max_queries > 0 ? (size_t)lg->max_queries : 0;
        int64_t *off = NULL;
        size_t count = 0;
        int rc = cb_schedule_read_replay(lg->file, max_n, &off, &count, err);
        if (rc != CB_OK) return rc;
        if (max_n == 0 && lg->timeout_ns > 0) {
            while (count > 0 && off[count - 1] >= lg->timeout_ns) count--;
        }
        *offsets_ns = off;
        *n = count;
        return CB_OK;
    }
    case CB_LOADGEN_CLOSED:
    case CB_LOADGEN_OFFLINE:
    default:
        return cb_error_set(err, CB_EINVAL, "loadgen: kind %d is not an open-loop load; it has "
                                            "no schedule", (int)lg->kind);
    }
}

/* ---- replay files ---- */

typedef struct replay_reader {
    FILE *f;
    const char *path;
    int line;
    bool eof;
} replay_reader;

/* Reads the next line's first CSV column into field (trimmed, unquoted). Returns 1 when a line
 * was read, 0 at end of file, negative on error. Blank lines and '#' comments come back as an
 * empty field with *skip set. */
static int replay_next(replay_reader *rd, char *field, bool *skip, cb_error *err) {
    if (rd->eof) return 0;
    size_t len = 0, line_bytes = 0;
    bool in_field = true, any = false, too_long = false;
    int c;
    while ((c = getc(rd->f)) != EOF && c != '\n') {
        any = true;
        if (++line_bytes > CB_REPLAY_LINE_MAX) {
            cb_error_set(err, CB_ECONFIG, "line longer than %zu bytes (1 MiB, the maximum)",
                         CB_REPLAY_LINE_MAX);
            cb_error_at(err, rd->path, rd->line + 1, 1);
            return CB_ECONFIG;
        }
        if (!in_field) continue;
        if (c == ',') {
            in_field = false;
            continue;
        }
        if (len + 1 >= CB_REPLAY_FIELD_MAX) {
            too_long = true;
            continue;
        }
        field[len++] = (char)c;
    }
    if (c == EOF) {
        if (ferror(rd->f)) {
            cb_error_set(err, CB_EIO, "read error: %s", strerror(errno));
            cb_error_at(err, rd->path, rd->line + 1, 1);
            return CB_EIO;
        }
        rd->eof = true;
        if (!any) return 0;
    }
    rd->line++;
    field[len] = '\0';
    /* Trim spaces and a trailing CR, then one pair of double quotes. */
    size_t b = 0, e = len;
    while (b < e && isspace((unsigned char)field[b])) b++;
    while (e > b && isspace((unsigned char)field[e - 1])) e--;
    if (e - b >= 2 && field[b] == '"' && field[e - 1] == '"') {
        b++;
        e--;
    }
    memmove(field, field + b, e - b);
    field[e - b] = '\0';
    *skip = field[0] == '\0' || field[0] == '#';
    if (too_long && !*skip) {
        cb_error_set(err, CB_ECONFIG, "first column longer than %d bytes", CB_REPLAY_FIELD_MAX - 1);
        cb_error_at(err, rd->path, rd->line, 1);
        return CB_ECONFIG;
    }
    return 1;
}

/* Parses a non-negative decimal time in the given unit (ns per unit) into ns. Returns 0, or
 * 1 when the text is not a number at all, or a negative status with err set. */
static int parse_time_ns(const char *s, int64_t ns_per_unit, int64_t *out, const char **why) {
    const char *p = s;
    if (*p == '+') p++;
    if (*p == '-') {
        *why = "negative";
        return -1;
    }
    const char *ip = p;
    int64_t ipart = 0;
    bool overflow = false;
    while (isdigit((unsigned char)*p)) {
        int d = *p++ - '0';
        if (ipart > (INT64_MAX - d) / 10)
            overflow = true;
        else
            ipart = ipart * 10 + d;
    }
    size_t nint = (size_t)(p - ip);
    const char *fp = NULL;
    size_t nfrac = 0;
    if (*p == '.') {
        fp = ++p;
        while (isdigit((unsigned char)*p)) p++;
        nfrac = (size_t)(p - fp);
    }
    if (nint + nfrac == 0) {
        *why = "not a number";
        return 1;
    }
    if (*p == 'e' || *p == 'E') {
        /* Exponent notation: long double is exact enough (64-bit mantissa). */
        char *end = NULL;
        errno = 0;
        long double v = strtold(s, &end);
        if (end == s || *end != '\0' || errno == ERANGE || !isfinite((double)v)) {
            *why = "not a number";
            return 1;
        }
        if (v < 0) {
            *why = "negative";
            return -1;
        }
        long double ns = v * (long double)ns_per_unit;
        if (ns >= 9.2e18L) {
            *why = "too large";
            return -1;
        }
        *out = (int64_t)llroundl(ns);
        return 0;
    }
    if (*p != '\0') {
        *why = "not a number";
        return 1;
    }
    if (overflow || ipart > INT64_MAX / ns_per_unit) {
        *why = "too large";
        return -1;
    }
    int64_t ns = ipart * ns_per_unit;
    /* Fraction: digits beyond the unit's resolution are rounded (half up). */
    int64_t scale = ns_per_unit, frac_ns = 0;
    for (size_t i = 0; i < nfrac; i++) {
        int d = fp[i] - '0';
        if (scale >= 10) {
            scale /= 10;
            frac_ns += d * scale;
        } else {
            if (d >= 5) frac_ns++;
            break;
        }
    }
    if (ns > INT64_MAX - frac_ns) {
        *why = "too large";
        return -1;
    }
    *out = ns + frac_ns;
    return 0;
}

static bool ends_with_ci(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    if (m > n) return false;
    for (size_t i = 0; i < m; i++)
        if (tolower((unsigned char)s[n - m + i]) != tolower((unsigned char)suffix[i])) return false;
    return true;
}

int cb_schedule_read_replay(const char *path, size_t max_n, int64_t **offsets_ns, size_t *n,
                            cb_error *err) {
    if (!path || !n)
        return cb_error_set(err, CB_EINVAL, "cb_schedule_read_replay: NULL argument");
    if (offsets_ns) *offsets_ns = NULL;
    *n = 0;
    replay_reader rd = {.f = fopen(path, "r"), .path = path};
    if (!rd.f) {
        int e = errno;
        cb_error_set(err, e == ENOENT ? CB_ENOENT : CB_EIO, "cannot open replay file: %s",
                     strerror(e));
        cb_error_at(err, path, 1, 1);
        return e == ENOENT ? CB_ENOENT : CB_EIO;
    }
    struct stat sb;
    if (fstat(fileno(rd.f), &sb) == 0 && S_ISDIR(sb.st_mode)) {
        fclose(rd.f);
        cb_error_set(err, CB_ECONFIG, "is a directory, not a replay CSV file");
        cb_error_at(err, path, 1, 1);
        return CB_ECONFIG;
    }
    int64_t ns_per_unit = 1000000000; /* seconds unless a header names the unit */
    bool header_possible = true;
    int64_t *off = NULL;
    size_t count = 0, cap = 0;
    int64_t first = 0, prev = 0;
    char field[CB_REPLAY_FIELD_MAX];
    int rc = CB_OK;
    for (;;) {
        if (max_n > 0 && count == max_n) break;
        bool skip = false;
        int r = replay_next(&rd, field, &skip, err);
        if (r < 0) {
            rc = r;
            goto fail;
        }
        if (r == 0) break;
        if (skip) continue;
        int64_t t = 0;
        const char *why = NULL;
        int pr = parse_time_ns(field, ns_per_unit, &t, &why);
        if (pr == 1 && header_possible) {
            header_possible = false;
            if (ends_with_ci(field, "_ns"))
                ns_per_unit = 1;
            else if (ends_with_ci(field, "_us"))
                ns_per_unit = 1000;
            else if (ends_with_ci(field, "_ms"))
                ns_per_unit = 1000000;
            continue;
        }
        header_possible = false;
        if (pr != 0) {
            rc = cb_error_set(err, CB_ECONFIG, "arrival time \"%s\": %s", field, why);
            cb_error_at(err, path, rd.line, 1);
            goto fail;
        }
        if (count == 0) {
            first = t;
        } else if (t < prev) {
            rc = cb_error_set(err, CB_ECONFIG,
                              "arrival time \"%s\" is earlier than the previous one; times must "
                              "not decrease", field);
            cb_error_at(err, path, rd.line, 1);
            goto fail;
        }
        prev = t;
        if (!offsets_ns) { /* checking only */
            if (++count > CB_SCHEDULE_MAX_ARRIVALS) {
                rc = cb_error_set(err, CB_ECONFIG, "more than %zu arrivals; set max_queries",
                                  CB_SCHEDULE_MAX_ARRIVALS);
                cb_error_at(err, path, rd.line, 1);
                goto fail;
            }
            continue;
        }
        if (count == cap) {
            if (cap >= CB_SCHEDULE_MAX_ARRIVALS) {
                rc = cb_error_set(err, CB_ECONFIG, "more than %zu arrivals; set max_queries",
                                  CB_SCHEDULE_MAX_ARRIVALS);
                cb_error_at(err, path, rd.line, 1);
                goto fail;
            }
            size_t ncap = cap ? cap * 2 : 1024;
            if (ncap > CB_SCHEDULE_MAX_ARRIVALS) ncap = CB_SCHEDULE_MAX_ARRIVALS;
            int64_t *grown = cb_realloc(off, ncap * sizeof *off);
            if (!grown) {
                rc = cb_error_set(err, CB_ENOMEM, "out of memory for %zu arrivals", ncap);
                cb_error_at(err, path, rd.line, 1);
                goto fail;
            }
            off = grown;
            cap = ncap;
        }
        off[count++] = t - first;
    }
    if (count == 0) {
        rc = cb_error_set(err, CB_ECONFIG, "no arrival times in the replay file");
        cb_error_at(err, path, 1, 1);
        goto fail;
    }
    fclose(rd.f);
    if (offsets_ns) *offsets_ns = off;
    *n = count;
    return CB_OK;
fail:
    fclose(rd.f);
    cb_free(off);
    return rc;
}
