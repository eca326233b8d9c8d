/*
 * self_test.h - proof that the simulator's checks can fail.
 *
 * A checker that never fires looks exactly like a correct core. The self
 * test feeds the checker deliberate violations directly (two leaders in a
 * term, two histories under one (index, term), a divergent apply, a stale
 * read, an unacknowledged write) and then runs real simulations with an
 * injected fault; each must be reported.
 */
#ifndef FLOTILLA_SIM_SELF_TEST_H
#define FLOTILLA_SIM_SELF_TEST_H

#include <stdio.h>

/* Returns 0 when every injected violation was reported, 1 otherwise; says
 * what it checked on `out`. */
int sim_self_test(FILE *out);

#endif
