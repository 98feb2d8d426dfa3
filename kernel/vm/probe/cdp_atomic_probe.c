// SPDX-License-Identifier: GPL-2.0
/*
 * Test-only module for the guest (never installed): the positive control of
 * the guest's dmesg scan.  Loading it sleeps with preemption disabled, the
 * bug PREEMPT_RT turns every spinlock_t taken in atomic context into, so the
 * kernel must print "BUG: scheduling while atomic" (and, on a kernel with
 * CONFIG_DEBUG_ATOMIC_SLEEP, "BUG: sleeping function called from invalid
 * context").  The guest loads it after its own dmesg verdict and checks that
 * the same scan now reports the splat: a scan that cannot see the bug class
 * it is there for fails.  The load always fails (-EAGAIN), so it never stays.
 */
#include <linux/module.h>
#include <linux/preempt.h>
#include <linux/delay.h>

static int __init cdp_atomic_probe_init(void)
{
	preempt_disable();
	msleep(1);
	/*
	 * The scheduler reports the bug and resets the preemption count as if
	 * preempt_disable() had not been called: enable only if it did not.
	 */
	if (preempt_count())
		preempt_enable();
	return -EAGAIN;
}
module_init(cdp_atomic_probe_init);

MODULE_DESCRIPTION("cdp test harness: sleep in atomic context once, on purpose");
MODULE_LICENSE("GPL");
