/*
 * engine_testing.h - hooks for tests that inject faults into a running
 * engine; not part of the public API (flotilla.h).
 */
#ifndef FLOTILLA_ENGINE_TESTING_H
#define FLOTILLA_ENGINE_TESTING_H

#include <stdbool.h>
#include <stdint.h>

#include "flotilla.h"

/*
 * Cuts (drop = true) or restores the link between this node and `node`, in
 * both directions as far as this node is concerned: every frame it sends
 * to node and every frame it receives from node is discarded, on every
 * shard; the connections stay up. A partition between two nodes is both
 * of them cutting their link to the other. Blocks. FL_E_INVALID for an
 * unknown node.
 */
int fl_engine_set_link_fault(fl_engine *engine, uint64_t node, bool drop);

#endif
