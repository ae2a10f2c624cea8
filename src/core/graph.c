/* core/graph.c - one pipeline's stage graph: checks, resolution, and drawings.
 *
 * Design: stage ids are mapped to indices by a linear scan (pipelines have few stages; the spec
 * caps them), every id reference (stage outputs, pipeline inputs/outputs, dataset_stage_id) is
 * resolved or reported at the list item that names it, reachability is a BFS from the inputs,
 * and cycles by an iterative DFS from the inputs in order: an edge to a stage on the DFS stack
 * is a back edge (out_back). Every cycle must contain a router stage (its max_hops bounds the
 * loop); that holds exactly when the graph without routers is acyclic, which a second DFS that
 * skips routers checks, reporting the router-free cycle it finds. Merge stages need
 * 2..CB_QUERY_MAX_PARTS inbound edges, and a merge on a cycle must have all of them inside its
 * loop (merge_in_loop), else a query that goes round again waits forever for its partner.
 * Errors carry the position of the offending YAML node when the spec came from a document
 * (nodes may be NULL for hand-built specs; then only the key is set).
 * Thread-safety: reentrant; cb_graph_resolve writes only into p. Ownership: arrays are
 * allocated in the caller's arena; temporary work arrays are freed before returning.
 */
#include <string.h>

#include "core/spec.h"

static int oom(cb_error *err) { return cb_error_set(err, CB_ENOMEM, "out of memory"); }

static void at_node(cb_error *err, const cb_node *n, const char *key) {
    if (n) cb_error_at(err, n->file, n->line, n->col);
    cb_error_key(err, key);
}

static const cb_node *list_item(const cb_node *map, const char *key, size_t i) {
    const cb_node *l = cb_node_get(map, key);
    if (l && l->kind == CB_NODE_SEQ && i < l->n) return l->items[i];
    return l; /* a scalar written for a one-item list, or NULL */
}

static int find_idx(const cb_pipeline_spec *p, int id) {
    for (size_t i = 0; i < p->n_stages; i++)
        if (p->stages[i].id == id) return (int)i;
    return -1;
}

static int dangling(cb_error *err, const cb_node *n, const char *key, int id) {
    cb_error_set(err, CB_ECONFIG, "no stage with id %d in this pipeline", id);
    at_node(err, n, key);
    return CB_ECONFIG;
}

/* Formats the cycle stack[from..top] -> stack[from] as "1 -> 2 -> 1". */
static void cycle_text(const cb_pipeline_spec *p, const int *stack, size_t from, size_t top,
                       char *buf, size_t size) {
    size_t off = 0;
    buf[0] = '\0';
    for (size_t k = from; k <= top && off < size; k++) {
        int w = snprintf(buf + off, size - off, "%d -> ", p->stages[stack[k]].id);
        if (w > 0) off += (size_t)w;
    }
    if (off < size) snprintf(buf + off, size - off, "%d", p->stages[stack[from]].id);
}

/* DFS over the graph from the inputs in order (then, for the router-free pass, from every
 * stage). Pass 0 (skip_routers 0) marks back edges; pass 1 ignores router stages and reports
 * the first cycle it meets. */
static int dfs(cb_pipeline_spec *p, const char *keypath, int *state, int *stack,
               size_t *next_edge, int skip_routers, cb_error *err) {
    size_t n = p->n_stages;
    for (size_t r = 0; r < p->n_inputs + (skip_routers ? n : 0); r++) {
        int root = r < p->n_inputs ? p->input_idx[r] : (int)(r - p->n_inputs);
        if (state[root] || (skip_routers && p->stages[root].is_router)) continue;
        size_t top = 0;
        stack[0] = root;
        state[root] = 1;
        next_edge[root] = 0;
        for (;;) {
            int u = stack[top];
            cb_stage_spec *s = &p->stages[u];
            if (next_edge[u] == s->n_outputs) {
                state[u] = 2;
                if (top == 0) break;
                top--;
                continue;
            }
            size_t j = next_edge[u]++;
            int v = s->out_idx[j];
            if (skip_routers && p->stages[v].is_router) continue;
            if (state[v] == 0) {
                state[v] = 1;
                next_edge[v] = 0;
                stack[++top] = v;
            } else if (state[v] == 1) {
                if (!skip_routers) {
                    s->out_back[j] = true;
                    continue;
                }
                size_t from = top;
                while (stack[from] != v) from--;
                char cyc[256], key[CB_ERROR_KEY_MAX];
                cycle_text(p, stack, from, top, cyc, sizeof cyc);
                cb_error_set(err, CB_ECONFIG,
                             "cycle %s passes through no router (util.router bounds loops with "
                             "max_hops)", cyc);
                snprintf(key, sizeof key, "%s.stages[%d].outputs[%zu]", keypath, u, j);
                at_node(err, list_item(s->node, "outputs", j), key);
                return CB_ECONFIG;
            }
        }
    }
    return 0;
}

/* Marks in seen[] every stage reachable from stage `from` (itself only through a cycle). */
static void reach_from(const cb_pipeline_spec *p, int from, char *seen, int *queue) {
    size_t qh = 0, qt = 0;
    memset(seen, 0, p->n_stages);
    queue[qt++] = from;
    while (qh < qt) {
        const cb_stage_spec *s = &p->stages[queue[qh++]];
        for (size_t j = 0; j < s->n_outputs; j++) {
            int k = s->out_idx[j];
            if (!seen[k]) {
                seen[k] = 1;
                queue[qt++] = k;
            }
        }
    }
}

/* A merge joins one arrival of a query from each inbound edge. On a cycle that is fine only
 * when the whole join lies inside the loop body: every inbound edge comes from a stage the
 * merge reaches (its own strongly connected component), so each round brings one arrival per
 * edge. An edge from outside the loop (or the load generator, for an input stage) delivers once
 * while the loop's edge delivers only after the merge has run: the query would wait forever. */
static int merge_in_loop(const cb_pipeline_spec *p, int m, const char *keypath, cb_error *err) {
    size_t n = p->n_stages;
    char *seen = cb_calloc(n + 1, 1);
    int *queue = cb_calloc(n + 1, sizeof *queue);
    if (!seen || !queue) {
        cb_free(seen);
        cb_free(queue);
        return oom(err);
    }
    reach_from(p, m, seen, queue);
    int rc = 0;
    if (seen[m]) {
        /* The loop: stages m reaches that also reach m (seen 2), by a fixpoint over the edges. */
        seen[m] = 2;
        for (int changed = 1; changed;) {
            changed = 0;
            for (size_t u = 0; u < n; u++) {
                const cb_stage_spec *s = &p->stages[u];
                for (size_t j = 0; j < s->n_outputs && seen[u] == 1; j++)
                    if (seen[s->out_idx[j]] == 2) seen[u] = 2, changed = 1;
            }
        }
        int outside = -1, bu = -1, bv = -1, router = -1;
        for (size_t u = 0; u < n; u++) {
            const cb_stage_spec *s = &p->stages[u];
            for (size_t j = 0; j < s->n_outputs; j++) {
                int v = s->out_idx[j];
                if (v == m && seen[u] != 2 && outside < 0) outside = (int)u;
                if (s->out_back[j] && seen[u] == 2 && seen[v] == 2 &&
                    (bu < 0 || (s->is_router && !p->stages[bu].is_router)))
                    bu = (int)u, bv = v; /* a router's back edge first */
            }
            if (s->is_router && seen[u] == 2 && router < 0) router = (int)u;
        }
        if (bu >= 0 && p->stages[bu].is_router) router = bu;
        const cb_stage_spec *ms = &p->stages[m];
        if (outside >= 0 || ms->is_input) {
            char from[96], key[CB_ERROR_KEY_MAX];
            if (outside >= 0)
                snprintf(from, sizeof from, "its inbound edge from stage %d '%.40s' comes",
                         p->stages[outside].id, p->stages[outside].name ? p->stages[outside].name : "");
            else
                snprintf(from, sizeof from, "it is a pipeline input: the load generator's arrival comes");
            const cb_stage_spec *rs = router >= 0 ? &p->stages[router] : NULL;
            cb_error_set(err, CB_ECONFIG,
                         "merge stage %d '%s' is on the loop closed by the back edge %d -> %d "
                         "(router %d '%s'), but %s from outside the loop: a query that goes round "
                         "again would wait forever for its partner (keep the whole join inside the "
                         "loop body, or merge after the loop)",
                         ms->id, ms->name ? ms->name : "", bu >= 0 ? p->stages[bu].id : -1,
                         bv >= 0 ? p->stages[bv].id : -1, rs ? rs->id : -1,
                         rs && rs->name ? rs->name : "", from);
            snprintf(key, sizeof key, "%s.stages[%d].polling_policy", keypath, m);
            const cb_node *pn = cb_node_get(ms->node, "polling_policy");
            at_node(err, pn ? pn : ms->node, key);
            rc = CB_ECONFIG;
        }
    }
    cb_free(seen);
    cb_free(queue);
    return rc;
}

int cb_graph_resolve(cb_pipeline_spec *p, const char *keypath, cb_arena *arena, cb_error *err) {
    if (!p || !arena) return cb_error_set(err, CB_EINVAL, "cb_graph_resolve: bad arguments");
    if (!keypath) keypath = "pipeline";
    char key[CB_ERROR_KEY_MAX];
    size_t n = p->n_stages;
    if (n == 0) {
        cb_error_set(err, CB_ECONFIG, "a pipeline needs at least one stage");
        snprintf(key, sizeof key, "%s.stages", keypath);
        at_node(err, p->node, key);
        return CB_ECONFIG;
    }

    /* Ids: unique. */
    for (size_t i = 0; i < n; i++) {
        int j = find_idx(p, p->stages[i].id);
        if (j >= 0 && (size_t)j < i) {
            const cb_node *first = cb_node_get(p->stages[j].node, "id");
            if (first)
                cb_error_set(err, CB_ECONFIG, "duplicate stage id %d (first used by stages[%d] at line %d)",
                             p->stages[i].id, j, first->line);
            else
                cb_error_set(err, CB_ECONFIG, "duplicate stage id %d (first used by stages[%d])",
                             p->stages[i].id, j);
            snprintf(key, sizeof key, "%s.stages[%zu].id", keypath, i);
            const cb_node *idn = cb_node_get(p->stages[i].node, "id");
            at_node(err, idn ? idn : p->stages[i].node, key);
            return CB_ECONFIG;
        }
    }

    /* Edges. */
    for (size_t i = 0; i < n; i++) {
        cb_stage_spec *s = &p->stages[i];
        s->n_in_edges = 0;
        s->is_input = s->is_output = false;
    }
    for (size_t i = 0; i < n; i++) {
        cb_stage_spec *s = &p->stages[i];
        s->out_idx = cb_arena_alloc(arena, (s->n_outputs + 1) * sizeof *s->out_idx);
        s->out_back = cb_arena_alloc(arena, (s->n_outputs + 1) * sizeof *s->out_back);
        if (!s->out_idx || !s->out_back) return oom(err);
        for (size_t j = 0; j < s->n_outputs; j++) {
            int k = find_idx(p, s->outputs[j]);
            if (k < 0) {
                snprintf(key, sizeof key, "%s.stages[%zu].outputs[%zu]", keypath, i, j);
                return dangling(err, list_item(s->node, "outputs", j), key, s->outputs[j]);
            }
            for (size_t m = 0; m < j; m++) {
                if (s->outputs[m] == s->outputs[j]) {
                    snprintf(key, sizeof key, "%s.stages[%zu].outputs[%zu]", keypath, i, j);
                    cb_error_set(err, CB_ECONFIG, "stage %d is listed twice", s->outputs[j]);
                    at_node(err, list_item(s->node, "outputs", j), key);
                    return CB_ECONFIG;
                }
            }
            s->out_idx[j] = k;
            s->out_back[j] = false;
            p->stages[k].n_in_edges++;
        }
    }
    p->input_idx = cb_arena_alloc(arena, (p->n_inputs + 1) * sizeof *p->input_idx);
    if (!p->input_idx) return oom(err);
    if (p->n_inputs == 0) {
        cb_error_set(err, CB_ECONFIG, "a pipeline needs at least one input stage");
        snprintf(key, sizeof key, "%s.inputs", keypath);
        const cb_node *in = cb_node_get(p->node, "inputs");
        at_node(err, in ? in : p->node, key);
        return CB_ECONFIG;
    }
    for (size_t j = 0; j < p->n_inputs; j++) {
        int k = find_idx(p, p->inputs[j]);
        snprintf(key, sizeof key, "%s.inputs[%zu]", keypath, j);
        if (k < 0) return dangling(err, list_item(p->node, "inputs", j), key, p->inputs[j]);
        if (p->stages[k].is_input) {
            cb_error_set(err, CB_ECONFIG, "stage %d is listed twice", p->inputs[j]);
            at_node(err, list_item(p->node, "inputs", j), key);
            return CB_ECONFIG;
        }
        p->input_idx[j] = k;
        p->stages[k].is_input = true;
    }
    for (size_t j = 0; j < p->n_outputs; j++) {
        int k = find_idx(p, p->outputs[j]);
        snprintf(key, sizeof key, "%s.outputs[%zu]", keypath, j);
        if (k < 0) return dangling(err, list_item(p->node, "outputs", j), key, p->outputs[j]);
        p->stages[k].is_output = true;
    }
    p->dataset_idx = -1;
    if (p->dataset_stage_id >= 0) {
        int k = find_idx(p, p->dataset_stage_id);
        snprintf(key, sizeof key, "%s.dataset_stage_id", keypath);
        const cb_node *dn = cb_node_get(p->node, "dataset_stage_id");
        if (k < 0) return dangling(err, dn, key, p->dataset_stage_id);
        if (p->stages[k].ops && !p->stages[k].ops->splits) {
            cb_error_set(err, CB_ECONFIG, "stage %d (%s) is not a dataset stage: it reports no splits",
                         p->dataset_stage_id, p->stages[k].component ? p->stages[k].component : "?");
            at_node(err, dn, key);
            return CB_ECONFIG;
        }
        p->dataset_idx = k;
    }

    /* Reachability (BFS) and cycles (iterative DFS), sharing one work allocation. */
    int *work = cb_calloc(3 * n + 1, sizeof *work);
    if (!work) return oom(err);
    int *queue = work, *state = work + n, *stack = work + 2 * n; /* state: 0 new, 1 on stack, 2 done */
    size_t *next_edge = cb_calloc(n + 1, sizeof *next_edge);
    if (!next_edge) {
        cb_free(work);
        return oom(err);
    }
    int rc = 0;
    size_t qh = 0, qt = 0;
    for (size_t j = 0; j < p->n_inputs; j++) {
        int k = p->input_idx[j];
        if (state[k] == 0) {
            state[k] = 1;
            queue[qt++] = k;
        }
    }
    while (qh < qt) {
        const cb_stage_spec *s = &p->stages[queue[qh++]];
        for (size_t j = 0; j < s->n_outputs; j++) {
            int k = s->out_idx[j];
            if (state[k] == 0) {
                state[k] = 1;
                queue[qt++] = k;
            }
        }
    }
    for (size_t i = 0; i < n && !rc; i++) {
        if (state[i]) continue;
        cb_error_set(err, CB_ECONFIG, "stage %d '%s' is unreachable from the pipeline inputs",
                     p->stages[i].id, p->stages[i].name ? p->stages[i].name : "");
        snprintf(key, sizeof key, "%s.stages[%zu]", keypath, i);
        at_node(err, p->stages[i].node, key);
        rc = CB_ECONFIG;
    }
    /* Pass 1 marks back edges (DFS from the inputs in order); pass 2 runs the same DFS on the
     * graph without routers, where any cycle at all is a cycle that no router bounds. */
    memset(state, 0, n * sizeof *state);
    dfs(p, keypath, state, stack, next_edge, 0, err);
    memset(state, 0, n * sizeof *state);
    if (!rc) rc = dfs(p, keypath, state, stack, next_edge, 1, err);
    cb_free(next_edge);
    cb_free(work);
    if (rc) return rc;

    /* Merge stages. */
    for (size_t i = 0; i < n; i++) {
        const cb_stage_spec *s = &p->stages[i];
        if (s->policy != CB_POLICY_MERGE) continue;
        if (s->n_in_edges >= 2 && s->n_in_edges <= CB_QUERY_MAX_PARTS) {
            if ((rc = merge_in_loop(p, (int)i, keypath, err))) return rc;
            continue;
        }
        if (s->n_in_edges < 2)
            cb_error_set(err, CB_ECONFIG,
                         "merge joins one arrival from each inbound edge and needs at least 2; "
                         "stage %d has %d", s->id, s->n_in_edges);
        else
            cb_error_set(err, CB_ECONFIG, "merge joins at most %d inbound edges; stage %d has %d",
                         CB_QUERY_MAX_PARTS, s->id, s->n_in_edges);
        snprintf(key, sizeof key, "%s.stages[%zu].polling_policy", keypath, i);
        const cb_node *pn = cb_node_get(s->node, "polling_policy");
        at_node(err, pn ? pn : s->node, key);
        return CB_ECONFIG;
    }
    return 0;
}

/* ---- drawings -------------------------------------------------------------------------- */

static void label_text(const char *s, int mermaid, FILE *out) {
    for (; s && *s; s++) {
        if (*s == '"') fputs(mermaid ? "#quot;" : "\\\"", out);
        else if (*s == '\\' && !mermaid) fputs("\\\\", out);
        else if (*s == '\n') fputc(' ', out);
        else fputc(*s, out);
    }
}

int cb_graph_write_mermaid(const cb_spec *spec, FILE *out) {
    if (!spec || !out) return CB_EINVAL;
    fputs("flowchart LR\n", out);
    for (size_t pi = 0; pi < spec->n_pipelines; pi++) {
        const cb_pipeline_spec *p = &spec->pipelines[pi];
        fprintf(out, "  subgraph p%zu[\"", pi);
        label_text(p->name, 1, out);
        fputs("\"]\n", out);
        fprintf(out, "    p%zu_lg([\"loadgen<br/>%s\"])\n", pi, cb_loadgen_kind_name(p->loadgen.kind));
        for (size_t i = 0; i < p->n_stages; i++) {
            const cb_stage_spec *s = &p->stages[i];
            fprintf(out, "    p%zu_s%zu[\"", pi, i);
            label_text(s->name, 1, out);
            fputs("<br/>", out);
            label_text(s->component, 1, out);
            if (s->workers > 1) fprintf(out, " x%d", s->workers);
            if (s->policy != CB_POLICY_SINGLE) fprintf(out, "<br/>%s", cb_policy_name(s->policy));
            fputs("\"]\n", out);
        }
        for (size_t j = 0; j < p->n_inputs; j++)
            fprintf(out, "    p%zu_lg --> p%zu_s%d\n", pi, pi, p->input_idx ? p->input_idx[j] : 0);
        for (size_t i = 0; i < p->n_stages; i++) {
            const cb_stage_spec *s = &p->stages[i];
            for (size_t j = 0; j < s->n_outputs; j++)
                fprintf(out, "    p%zu_s%zu %s p%zu_s%d\n", pi, i,
                        s->out_back && s->out_back[j] ? "-.->" : "-->", pi,
                        s->out_idx ? s->out_idx[j] : 0);
        }
        fprintf(out, "    p%zu_done((done))\n", pi);
        for (size_t i = 0; i < p->n_stages; i++)
            if (p->stages[i].is_output) fprintf(out, "    p%zu_s%zu --> p%zu_done\n", pi, i, pi);
        fputs("  end\n", out);
    }
    return ferror(out) ? CB_EIO : 0;
}

int cb_graph_write_dot(const cb_spec *spec, FILE *out) {
    if (!spec || !out) return CB_EINVAL;
    fputs("digraph colobench {\n  rankdir=LR;\n  node [shape=box];\n", out);
    for (size_t pi = 0; pi < spec->n_pipelines; pi++) {
        const cb_pipeline_spec *p = &spec->pipelines[pi];
        fprintf(out, "  subgraph cluster_%zu {\n    label=\"", pi);
        label_text(p->name, 0, out);
        fputs("\";\n", out);
        fprintf(out, "    p%zu_lg [shape=oval, label=\"loadgen\\n%s\"];\n", pi,
                cb_loadgen_kind_name(p->loadgen.kind));
        for (size_t i = 0; i < p->n_stages; i++) {
            const cb_stage_spec *s = &p->stages[i];
            fprintf(out, "    p%zu_s%zu [label=\"", pi, i);
            label_text(s->name, 0, out);
            fputs("\\n", out);
            label_text(s->component, 0, out);
            if (s->workers > 1) fprintf(out, " x%d", s->workers);
            if (s->policy != CB_POLICY_SINGLE) fprintf(out, "\\n%s", cb_policy_name(s->policy));
            fputs("\"];\n", out);
        }
        for (size_t j = 0; j < p->n_inputs; j++)
            fprintf(out, "    p%zu_lg -> p%zu_s%d;\n", pi, pi, p->input_idx ? p->input_idx[j] : 0);
        for (size_t i = 0; i < p->n_stages; i++) {
            const cb_stage_spec *s = &p->stages[i];
            for (size_t j = 0; j < s->n_outputs; j++)
                fprintf(out, "    p%zu_s%zu -> p%zu_s%d%s;\n", pi, i, pi,
                        s->out_idx ? s->out_idx[j] : 0,
                        s->out_back && s->out_back[j] ? " [style=dashed, constraint=false]" : "");
        }
        fprintf(out, "    p%zu_done [shape=doublecircle, label=\"done\"];\n", pi);
        for (size_t i = 0; i < p->n_stages; i++)
            if (p->stages[i].is_output) fprintf(out, "    p%zu_s%zu -> p%zu_done;\n", pi, i, pi);
        fputs("  }\n", out);
    }
    fputs("}\n", out);
    return ferror(out) ? CB_EIO : 0;
}
