/* core/compat.h - reads configs of the reference Python framework (RAD lab's
 * collocation-benchmark) by translating their tree into colobench's before spec.c reads it.
 *
 * A document is in the reference's dialect when it has a key or a name only the reference uses:
 * top-level `listeners` or `cells`, `loadgen.is_training`, a stage component that is a Python
 * module path (`stages.…`). Anything else is returned as it is, so colobench's own configs never
 * change meaning and nothing is noted for them. docs/porting.md lists the mapping key by key.
 * Thread-safety: reentrant; the registry is only read. Ownership: the translated tree lives in
 * the caller's arena and shares the document's untouched nodes (the document must outlive it);
 * every new node carries the position of the text it was made from.
 */
#ifndef CB_CORE_COMPAT_H
#define CB_CORE_COMPAT_H

#include <stdbool.h>
#include <stddef.h>

#include "colobench/error.h"
#include "core/alloc.h"
#include "core/cfgtree.h"
#include "core/registry.h"

/* At most this many notes (one per kind of thing that has no colobench equivalent). */
#define CB_COMPAT_MAX_NOTES 4

typedef struct cb_compat_out {
    cb_node *root;          /* the tree to read: doc->root itself for a colobench config */
    bool translated;        /* the document was in the reference's dialect */
    const char *notes[CB_COMPAT_MAX_NOTES]; /* arena strings: what the translation left out */
    size_t n_notes;
} cb_compat_out;

/* Translates doc (see above) into *out. A reference config whose stages colobench lacks is
 * rejected with one CB_ECONFIG naming every missing component with its line ("FILE: needs
 * components colobench does not have: stages.x.Y (line 12), ...; see docs/porting.md"); keys it
 * cannot map are rejected at their position. On error *out holds the untranslated root. */
int cb_compat_translate(const cb_doc *doc, const cb_registry *reg, cb_arena *arena,
                        cb_compat_out *out, cb_error *err);

#endif
