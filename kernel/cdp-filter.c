// SPDX-License-Identifier: GPL-2.0
/*
 * cdp's in-place device filter: the second way into the capture core
 * (cdp-core.c), for a block device that is not a device-mapper device and
 * is already in use.  No new device node, no table: the filter sees the
 * device's bios where every bio enters the block layer, submit_bio_noacct(),
 * and the user keeps writing to the device as before.  The control device
 * /dev/cdpctl and its ioctls (cdp_filter_abi.h) are shaped after the
 * blkfilter proposal, so that only the hook changes once the kernel has a
 * filter API of its own.
 *
 * The reasons for each choice:
 *
 * The hook.  Mainline has no block filter API (blk_interposer and
 * blkfilter were proposed, neither merged), so the filter is an ftrace hook
 * on submit_bio_noacct(), which is exported, as are the ftrace calls.  The
 * ftrace callback itself runs with preemption off and may not sleep, but
 * capturing a write may (policy=block waits for room in the ring, the
 * per-bio state comes from a mempool), so the callback only redirects the
 * call (FTRACE_OPS_FL_IPMODIFY) to cdp_submit_hook(), an ordinary function
 * that captures and then calls the real submit_bio_noacct().  On kernels
 * whose ftrace passes arguments (HAVE_DYNAMIC_FTRACE_WITH_ARGS: all four
 * we test) the instruction pointer can be changed without a full register
 * save; elsewhere FTRACE_OPS_FL_SAVE_REGS is asked for.  Another IPMODIFY
 * user of the function (a livepatch, blksnap's bdevfilter) makes the
 * registration fail with EBUSY: attach reports it, nothing is overridden.
 * The hook is registered with the first filter and, by default, stays
 * until the module is unloaded.  Registering and removing it patches the
 * kernel's text at submit_bio_noacct() while other CPUs run through it;
 * under qemu's TCG that churn (60 cycles under write load, hook_idle_ms=0)
 * left a vCPU re-executing a stale int3 at the patch site every few dozen
 * cycles, which real CPUs are not known to do but which a test machine
 * must not depend on.  Once per boot is enough: with no filter attached
 * the hook costs a redirect and a lookup in an empty list per bio.  hook_idle_ms >= 0
 * removes it that long after the last filter went instead (the guest's
 * filter-hookcycle test uses 0).
 *
 * Recursion.  cdp_submit_hook() calls submit_bio_noacct(), which enters the
 * ftrace callback again: a call whose return address lies in this module
 * is let through (within_module()), so each bio is seen once on its way in.
 * The filter itself submits no bio.  Lower layers do: blk-mq splits a bio
 * too big for the device and resubmits the remainder through
 * submit_bio_noacct(), and a driver stacked below may submit to other
 * devices.  A bio already captured carries the filter's end_io; it is
 * recognised by it and passed through, so a split remainder is not
 * recorded twice.  Bios to other disks are not ours.
 *
 * Which bios are ours.  A filter on a whole disk takes every write to the
 * disk, through the disk's own node or any partition's, at its offset on
 * the disk.  A filter on a partition takes the writes inside the
 * partition's range, whether sent to the partition or to the whole disk,
 * at their offset in the partition; a write sent to the disk that covers
 * only part of the partition is dropped into the overflow bitmap (its range
 * is copied from the device once it completed).  Hence a disk and one of
 * its partitions cannot both have a filter (EBUSY).  The sector of a bio
 * not yet remapped (BIO_REMAPPED) is relative to its partition.
 * WRITE, DISCARD, WRITE_ZEROES and an empty flush get their record as in
 * the dm target; SECURE_ERASE is dropped into the bitmap (the device
 * decides what its range reads as); zoned devices are refused (zone append
 * writes where the device says, after the fact).
 *
 * Completion.  The record's end must be the bio's end on the device, so
 * that DISCARDED still means "the device failed it".  The filter puts its
 * own end_io and private on the bio and keeps the originals in the
 * per-bio state (from a mempool: the filter cannot add per-bio data to a
 * bio it does not own); at completion the core commits or discards the
 * record by bio->bi_status, then the originals are put back and called.
 * The per-bio state is taken with GFP_NOIO, which cannot fail, when the
 * submitter may sleep; from atomic context it is GFP_NOWAIT out of the
 * pool's reserve, and in the rare case that is empty the bio is failed
 * (BLK_STS_AGAIN for REQ_NOWAIT, else BLK_STS_RESOURCE) rather than
 * written unrecorded.  A bio too long for one record (a quarter of the
 * ring) is dropped into the bitmap, not split: the filter then needs no
 * bio_set of its own and allocates nothing more.
 *
 * FLUSH and FUA.  The flags are recorded as the dm target records them.
 * An empty flush is a FLUSH record committed when the flush completed.  A
 * REQ_PREFLUSH that carries data (dm core splits those; the filter cannot)
 * gets a FLUSH record reserved before its WRITE record, both finished when
 * the bio completes: the same order dm core gives the two halves.
 *
 * Bios in flight at attach.  A write submitted before the filter was
 * listed is not captured, and the baseline copy that "cdp attach" takes
 * after attaching must see it: attach freezes and unfreezes the disk's
 * queue once the filter is live, which waits for every request that had
 * entered the queue.  (A write still between submit_bio_noacct()'s entry
 * and the queue at that moment is not waited for; the window is a few
 * instructions, and the drain service's first resync would be needed to
 * close it completely.)
 *
 * Bios in flight at detach.  The filter leaves the list first;
 * synchronize_srcu() waits for every hook that may still have found it;
 * then detach waits until every captured bio completed (as dm waits for
 * its suspend), so the records are final before the core sets DETACHED.
 *
 * Hot removal.  The filter holds the device open for reading, never
 * exclusively (that would refuse the mounts the filter is meant to live
 * under), so del_gendisk() goes ahead.  A work item looks at the disk
 * every half second; once it is dead (GD_DEAD: del_gendisk failed every
 * bio in flight, so they have completed) the filter detaches itself, and
 * the ring gets DETACHED.
 *
 * Module lifetime.  Each attached filter holds a module reference, so
 * rmmod is refused (EBUSY) while one is attached.  A second SRCU domain
 * covers the whole of cdp_submit_hook(), including its call into the block
 * layer, which may sleep: removing the hook waits for it (after ftrace's
 * own wait for the trampoline), so no task can return into the module's
 * text after it is gone.
 */

#include <linux/module.h>
#include <linux/ftrace.h>
#include <linux/blkdev.h>
#include <linux/blk-mq.h>
#include <linux/bio.h>
#include <linux/miscdevice.h>
#include <linux/mempool.h>
#include <linux/srcu.h>
#include <linux/rculist.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/workqueue.h>
#include <linux/wait_bit.h>
#include <linux/uaccess.h>
#include <linux/capability.h>
#include <linux/version.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/string.h>

#include "cdp-core.h"
#include "cdp_filter_abi.h"

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0) && LINUX_VERSION_CODE < KERNEL_VERSION(6, 9, 0)
#error "cdp-filter: block device opening on 6.5 to 6.8 is not handled (no Debian kernel is one)"
#endif

#define CDP_WATCH_MS		500	/* how often a filtered disk is looked at */
#define CDP_FBIO_RESERVE	256	/* per-bio states kept for atomic submitters */

/* How long the hook outlives the last filter; negative: until unload (see The hook). */
static int hook_idle_ms = -1;
module_param(hook_idle_ms, int, 0644);
MODULE_PARM_DESC(hook_idle_ms, "ms the submit_bio_noacct hook stays after the last filter; -1: until unload");

struct cdp_filter {
	struct list_head list;		/* on cdp_filters (SRCU for the hook) */
	struct cdp_c *c;		/* the capture context */
	dev_t devt;			/* the filtered device */
	struct gendisk *disk;		/* its disk */
	struct block_device *bdev;	/* held open for reading */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
	struct file *bdev_file;		/* the open */
#endif
	sector_t start;			/* first disk sector of the range */
	sector_t nr_sectors;		/* its length */
	atomic_t inflight;		/* captured bios not completed */
	bool gone;			/* off the list: being detached */
	struct delayed_work watch;	/* hot removal */
};

/* A captured bio: what the filter put on it and what it took off. */
struct cdp_fbio {
	struct cdp_filter *f;
	bio_end_io_t *end_io;		/* the bio's own */
	void *private;			/* the bio's own */
	struct cdp_per_bio flush;	/* REQ_PREFLUSH with data: its FLUSH record */
	struct cdp_per_bio io;		/* the bio's record */
};

static LIST_HEAD(cdp_filters);
static DEFINE_MUTEX(cdp_filters_lock);	/* the list, the hook's registration */
static struct srcu_struct cdp_filter_srcu;	/* the hook's lookups and captures */
static struct srcu_struct cdp_hook_srcu;	/* a task anywhere in cdp_submit_hook() */
static mempool_t *cdp_fbio_pool;
static struct workqueue_struct *cdp_filter_wq;	/* the watches; drained at unload */
static bool cdp_hook_on;
static void cdp_hook_idle_fn(struct work_struct *work);
static DECLARE_DELAYED_WORK(cdp_hook_idle, cdp_hook_idle_fn);
static atomic64_t cdp_failed_nomem;	/* bios failed for want of per-bio state */

static void cdp_submit_hook(struct bio *bio);
static void cdp_filter_endio(struct bio *bio);

/* ---------------------------------------------------------------- the hook */

static void notrace cdp_ftrace_thunk(unsigned long ip, unsigned long parent_ip,
				     struct ftrace_ops *ops, struct ftrace_regs *fregs)
{
	/* our own call of submit_bio_noacct() goes through: see Recursion */
	if (within_module(parent_ip, THIS_MODULE))
		return;
#ifdef ftrace_regs_set_instruction_pointer
	ftrace_regs_set_instruction_pointer(fregs, (unsigned long)cdp_submit_hook);
#else
	ftrace_instruction_pointer_set(fregs, (unsigned long)cdp_submit_hook);
#endif
}

static struct ftrace_ops cdp_ftrace_ops = {
	.func	= cdp_ftrace_thunk,
	.flags	= FTRACE_OPS_FL_IPMODIFY
#ifndef CONFIG_HAVE_DYNAMIC_FTRACE_WITH_ARGS
		| FTRACE_OPS_FL_SAVE_REGS
#endif
		,
};

static int cdp_hook_register(void)
{
	int r;

	lockdep_assert_held(&cdp_filters_lock);
	r = ftrace_set_filter_ip(&cdp_ftrace_ops, (unsigned long)submit_bio_noacct, 0, 0);
	if (r)
		return r;
	r = register_ftrace_function(&cdp_ftrace_ops);
	if (r) {
		ftrace_set_filter_ip(&cdp_ftrace_ops, (unsigned long)submit_bio_noacct, 1, 0);
		return r;
	}
	cdp_hook_on = true;
	return 0;
}

/*
 * Off with the hook: ftrace waits until no task is in its trampoline (and,
 * for a dynamic ops on a preemptible kernel, until every task preempted
 * before cdp_submit_hook()'s read lock passed a voluntary switch); then the
 * hook's own SRCU domain waits for the tasks still inside the function.
 */
static void cdp_hook_unregister(void)
{
	lockdep_assert_held(&cdp_filters_lock);
	unregister_ftrace_function(&cdp_ftrace_ops);
	ftrace_set_filter_ip(&cdp_ftrace_ops, (unsigned long)submit_bio_noacct, 1, 0);
	synchronize_srcu(&cdp_hook_srcu);
	cdp_hook_on = false;
}

/* The last filter went a while ago: off with the hook, unless one came meanwhile. */
static void cdp_hook_idle_fn(struct work_struct *work)
{
	mutex_lock(&cdp_filters_lock);
	if (list_empty(&cdp_filters) && cdp_hook_on)
		cdp_hook_unregister();
	mutex_unlock(&cdp_filters_lock);
}

/*
 * Whether the submitter may sleep.  Debian's kernels count preemption
 * (PREEMPT_DYNAMIC), so preemptible() sees spinlocks, preempt_disable()
 * and interrupts off; an RCU read section of preemptible RCU is looked at
 * separately.  Without preemption counting the answer is "no": the safe
 * side.
 */
static bool cdp_can_sleep(void)
{
	return preemptible() && !rcu_preempt_depth();
}

/*
 * The filter of bio's device, if bio is a change inside its range;
 * the bio's start on the disk in *sector.  Called under cdp_filter_srcu.
 */
static struct cdp_filter *cdp_filter_of(struct bio *bio, sector_t *sector)
{
	struct block_device *bdev = bio->bi_bdev;
	struct cdp_filter *f;

	list_for_each_entry_srcu(f, &cdp_filters, list, srcu_read_lock_held(&cdp_filter_srcu)) {
		sector_t s = bio->bi_iter.bi_sector, n = bio_sectors(bio);

		if (f->disk != bdev->bd_disk)
			continue;
		if (!bio_flagged(bio, BIO_REMAPPED))
			s += bdev->bd_start_sect;
		/* an empty flush flushes the whole disk's cache: ours too */
		if (n && (s + n <= f->start || s >= f->start + f->nr_sectors))
			return NULL;
		*sector = s;
		return f;
	}
	return NULL;
}

/*
 * Capture bio if it is ours.  Returns false when the bio was ended here
 * (no per-bio state could be had) and must not be submitted.
 */
static bool cdp_filter_bio(struct bio *bio)
{
	struct cdp_filter *f;
	struct cdp_fbio *fb;
	sector_t sector = 0, n = bio_sectors(bio);
	bool can_sleep;
	bool ok = true;
	int idx;

	if (bio->bi_end_io == cdp_filter_endio)
		return true;	/* captured already: a split's remainder */
	switch (bio_op(bio)) {
	case REQ_OP_WRITE:
		if (!n && !(bio->bi_opf & REQ_PREFLUSH))
			return true;
		break;
	case REQ_OP_DISCARD:
	case REQ_OP_WRITE_ZEROES:
	case REQ_OP_SECURE_ERASE:
		break;
	default:
		return true;	/* reads, zone commands: not a change */
	}

	idx = srcu_read_lock(&cdp_filter_srcu);
	f = cdp_filter_of(bio, &sector);
	if (!f)
		goto out;
	can_sleep = cdp_can_sleep();
	fb = mempool_alloc(cdp_fbio_pool, can_sleep ? GFP_NOIO : GFP_NOWAIT | __GFP_NOWARN);
	if (!fb) {
		atomic64_inc(&cdp_failed_nomem);
		pr_warn_ratelimited("cdp: %s: no per-bio state in atomic context: write failed\n",
				    cdp_name(f->c));
		bio->bi_status = (bio->bi_opf & REQ_NOWAIT) ? BLK_STS_AGAIN : BLK_STS_RESOURCE;
		bio_endio(bio);
		ok = false;
		goto out;
	}
	fb->f = f;
	cdp_io_init(&fb->flush);
	cdp_io_init(&fb->io);
	atomic_inc(&f->inflight);
	if (n && (sector < f->start || sector + n > f->start + f->nr_sectors)) {
		/* sent to the whole disk, partly over the filtered partition */
		sector_t lo = max(sector, f->start);
		sector_t hi = min(sector + n, f->start + f->nr_sectors);

		cdp_io_drop(f->c, &fb->io, (u64)(lo - f->start) << SECTOR_SHIFT,
			    (u64)(hi - lo) << SECTOR_SHIFT);
	} else {
		if (n && (bio->bi_opf & REQ_PREFLUSH))
			cdp_io_flush(f->c, &fb->flush, bio, can_sleep);
		cdp_io_submit(f->c, &fb->io, bio, (u64)(sector - f->start) << SECTOR_SHIFT,
			      can_sleep);
	}
	fb->end_io = bio->bi_end_io;
	fb->private = bio->bi_private;
	bio->bi_end_io = cdp_filter_endio;
	bio->bi_private = fb;
out:
	srcu_read_unlock(&cdp_filter_srcu, idx);
	return ok;
}

/* What submit_bio_noacct()'s callers reach while the hook is on. */
static void cdp_submit_hook(struct bio *bio)
{
	int idx = srcu_read_lock(&cdp_hook_srcu);

	if (cdp_filter_bio(bio))
		submit_bio_noacct(bio);	/* from this module: not redirected */
	/* not a tail call: the unlock keeps the return address in the module */
	srcu_read_unlock(&cdp_hook_srcu, idx);
}

/*
 * A captured bio completed: the core finishes its record(s) by the
 * device's verdict, then the bio gets its own end_io back and runs it.
 * Completion context (may be a hard interrupt): nothing here sleeps.
 */
static void cdp_filter_endio(struct bio *bio)
{
	struct cdp_fbio *fb = bio->bi_private;
	struct cdp_filter *f = fb->f;

	cdp_io_done(f->c, &fb->io, bio->bi_status);
	cdp_io_done(f->c, &fb->flush, bio->bi_status);
	bio->bi_end_io = fb->end_io;
	bio->bi_private = fb->private;
	mempool_free(fb, cdp_fbio_pool);
	if (bio->bi_end_io)
		bio->bi_end_io(bio);
	/*
	 * Last: detach waits for inflight to reach zero and then may free f
	 * and drop the module.  The read lock lets the module's exit wait
	 * (synchronize_rcu) for the few instructions left here.
	 */
	rcu_read_lock();
	if (atomic_dec_and_test(&f->inflight))
		wake_up_var(&f->inflight);
	rcu_read_unlock();
}

/* ------------------------------------------------------- attach and detach */

static int cdp_filter_open(struct cdp_filter *f)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
	f->bdev_file = bdev_file_open_by_dev(f->devt, BLK_OPEN_READ, NULL, NULL);
	if (IS_ERR(f->bdev_file)) {
		int r = PTR_ERR(f->bdev_file);

		f->bdev_file = NULL;
		return r;
	}
	f->bdev = file_bdev(f->bdev_file);
#else
	f->bdev = blkdev_get_by_dev(f->devt, FMODE_READ, NULL);
	if (IS_ERR(f->bdev)) {
		int r = PTR_ERR(f->bdev);

		f->bdev = NULL;
		return r;
	}
#endif
	return 0;
}

static void cdp_filter_close(struct cdp_filter *f)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 9, 0)
	if (f->bdev_file)
		fput(f->bdev_file);
#else
	if (f->bdev)
		blkdev_put(f->bdev, FMODE_READ);
#endif
	f->bdev = NULL;
}

/*
 * Wait for the writes that entered the disk's queue before the filter was
 * listed (see "Bios in flight at attach").
 */
static void cdp_filter_drain_queue(struct gendisk *disk)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 14, 0)
	unsigned int memflags = blk_mq_freeze_queue(disk->queue);

	blk_mq_unfreeze_queue(disk->queue, memflags);
#else
	blk_mq_freeze_queue(disk->queue);
	blk_mq_unfreeze_queue(disk->queue);
#endif
}

/*
 * The end of a filter that is off the list (f->gone), from detach or from
 * its watch: wait out the hooks that may have found it and the bios they
 * captured, end the ring (DETACHED), let go of the device and the module.
 */
static void cdp_filter_teardown(struct cdp_filter *f)
{
	synchronize_srcu(&cdp_filter_srcu);
	wait_var_event(&f->inflight, !atomic_read(&f->inflight));
	cdp_detach(f->c);
	cdp_put(f->c);
	cdp_filter_close(f);
	mutex_lock(&cdp_filters_lock);
	if (list_empty(&cdp_filters) && cdp_hook_on && READ_ONCE(hook_idle_ms) >= 0)
		mod_delayed_work(cdp_filter_wq, &cdp_hook_idle, msecs_to_jiffies(READ_ONCE(hook_idle_ms)));
	mutex_unlock(&cdp_filters_lock);
	kfree(f);
	module_put(THIS_MODULE);
}

static void cdp_filter_watch(struct work_struct *work)
{
	struct cdp_filter *f = container_of(to_delayed_work(work), struct cdp_filter, watch);

	mutex_lock(&cdp_filters_lock);
	if (f->gone) {
		mutex_unlock(&cdp_filters_lock);
		return;
	}
	if (!test_bit(GD_DEAD, &f->disk->state)) {
		queue_delayed_work(cdp_filter_wq, &f->watch, msecs_to_jiffies(CDP_WATCH_MS));
		mutex_unlock(&cdp_filters_lock);
		return;
	}
	f->gone = true;
	list_del_rcu(&f->list);
	mutex_unlock(&cdp_filters_lock);
	pr_warn("cdp: %s: the device went away: filter detached, ring DETACHED\n", cdp_name(f->c));
	cdp_filter_teardown(f);	/* frees f: the work item is not touched again */
}

/* The options string: words separated by spaces, each a core option. */
static int cdp_filter_options(struct cdp_c *c, char *opts)
{
	const char *err = NULL;
	char *word;
	int r;

	while ((word = strsep(&opts, " ")) != NULL) {
		if (!*word)
			continue;
		r = cdp_parse_opt(c, word, &err);
		if (r) {
			pr_warn("cdp: filter attach: %s\n", err);
			return r;
		}
	}
	return 0;
}

static int cdp_filter_attach(struct cdp_filter_ioc *ioc)
{
	const char *err = NULL;
	struct cdp_filter *f, *o;
	struct cdp_c *c = NULL;
	int r;

	f = kzalloc(sizeof(*f), GFP_KERNEL);
	if (!f)
		return -ENOMEM;
	atomic_set(&f->inflight, 0);
	INIT_DELAYED_WORK(&f->watch, cdp_filter_watch);
	r = lookup_bdev(ioc->device, &f->devt);
	if (r)
		goto free;
	r = cdp_filter_open(f);
	if (r)
		goto free;
	if (bdev_is_zoned(f->bdev)) {
		r = -EOPNOTSUPP;
		goto close;
	}
	f->disk = f->bdev->bd_disk;
	f->start = bdev_is_partition(f->bdev) ? f->bdev->bd_start_sect : 0;
	f->nr_sectors = bdev_nr_sectors(f->bdev);

	c = cdp_alloc_context();
	if (!c) {
		r = -ENOMEM;
		goto close;
	}
	f->c = c;
	r = cdp_set_name(c, ioc->name, &err);
	if (!r)
		r = cdp_filter_options(c, ioc->opts);
	if (!r)
		r = cdp_alloc_ring(c, bdev_nr_bytes(f->bdev), bdev_logical_block_size(f->bdev), &err);
	if (r) {
		if (err)
			pr_warn("cdp: filter attach: %s\n", err);
		goto put;
	}

	mutex_lock(&cdp_filters_lock);
	list_for_each_entry(o, &cdp_filters, list) {
		if (o->disk == f->disk) {
			r = o->devt == f->devt ? -EEXIST : -EBUSY;
			goto unlock;
		}
	}
	r = cdp_register(c, &err);
	if (r) {
		if (r == -EBUSY)
			r = -EADDRINUSE;	/* EBUSY is the disk's answer */
		goto unlock;
	}
	if (!cdp_hook_on) {
		r = cdp_hook_register();
		if (r) {
			pr_warn("cdp: cannot hook submit_bio_noacct (%d): another filter or livepatch holds it?\n", r);
			goto unlock;
		}
	}
	__module_get(THIS_MODULE);	/* the control device's open holds one too */
	list_add_tail_rcu(&f->list, &cdp_filters);
	mutex_unlock(&cdp_filters_lock);

	cdp_filter_drain_queue(f->disk);
	queue_delayed_work(cdp_filter_wq, &f->watch, msecs_to_jiffies(CDP_WATCH_MS));
	pr_info("cdp: %s: filter attached to %pg\n", cdp_name(c), f->bdev);
	return 0;

unlock:
	mutex_unlock(&cdp_filters_lock);
put:
	cdp_detach(c);		/* deregisters /dev/cdp/<name> if it got that far */
	cdp_put(c);
close:
	cdp_filter_close(f);
free:
	kfree(f);
	return r;
}

/* The filter named by ioc (name first, else device); cdp_filters_lock held. */
static struct cdp_filter *cdp_filter_find(struct cdp_filter_ioc *ioc, int *r)
{
	struct cdp_filter *f;
	dev_t devt = 0;

	if (!ioc->name[0]) {
		*r = lookup_bdev(ioc->device, &devt);
		if (*r)
			return NULL;
	}
	list_for_each_entry(f, &cdp_filters, list) {
		if (ioc->name[0] ? !strcmp(cdp_name(f->c), ioc->name) : f->devt == devt)
			return f;
	}
	*r = -ENOENT;
	return NULL;
}

static int cdp_filter_detach(struct cdp_filter_ioc *ioc)
{
	struct cdp_filter *f;
	int r = 0;

	mutex_lock(&cdp_filters_lock);
	f = cdp_filter_find(ioc, &r);
	if (!f) {
		mutex_unlock(&cdp_filters_lock);
		return r;
	}
	f->gone = true;
	list_del_rcu(&f->list);
	mutex_unlock(&cdp_filters_lock);
	cancel_delayed_work_sync(&f->watch);	/* it sees f->gone */
	pr_info("cdp: %s: filter detached from %pg\n", cdp_name(f->c), f->bdev);
	cdp_filter_teardown(f);
	return 0;
}

static int cdp_filter_ctl(struct cdp_filter_ioc *ioc)
{
	struct cdp_filter *f;
	int r = 0;

	if (ioc->cmd != CDP_FILTER_CTL_STATUS)
		return -EINVAL;
	mutex_lock(&cdp_filters_lock);
	f = cdp_filter_find(ioc, &r);
	if (f) {
		snprintf(ioc->device, sizeof(ioc->device), "%pg", f->bdev);
		strscpy(ioc->name, cdp_name(f->c), sizeof(ioc->name));
		cdp_format_status(f->c, ioc->opts, sizeof(ioc->opts));
	}
	mutex_unlock(&cdp_filters_lock);
	return r;
}

/* ---------------------------------------------------------- the control device */

static long cdp_ctl_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct cdp_filter_ioc *ioc;
	long r;

	if (cmd != CDP_FILTER_IOC_ATTACH && cmd != CDP_FILTER_IOC_DETACH &&
	    cmd != CDP_FILTER_IOC_CTL)
		return -ENOTTY;
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	ioc = memdup_user((void __user *)arg, sizeof(*ioc));
	if (IS_ERR(ioc))
		return PTR_ERR(ioc);
	if (ioc->reserved || !memchr(ioc->device, 0, sizeof(ioc->device)) ||
	    !memchr(ioc->name, 0, sizeof(ioc->name)) ||
	    !memchr(ioc->opts, 0, sizeof(ioc->opts))) {
		r = -EINVAL;
		goto out;
	}
	switch (cmd) {
	case CDP_FILTER_IOC_ATTACH:
		r = cdp_filter_attach(ioc);
		break;
	case CDP_FILTER_IOC_DETACH:
		r = cdp_filter_detach(ioc);
		break;
	default:
		r = cdp_filter_ctl(ioc);
		if (!r && copy_to_user((void __user *)arg, ioc, sizeof(*ioc)))
			r = -EFAULT;
		break;
	}
out:
	kfree(ioc);
	return r;
}

static const struct file_operations cdp_ctl_fops = {
	.owner		= THIS_MODULE,
	.unlocked_ioctl	= cdp_ctl_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= noop_llseek,
};

/* "cdpctl": ring devices are "cdp-<name>", so no ring name can take it. */
static struct miscdevice cdp_ctl_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "cdpctl",
	.mode	= 0600,
	.fops	= &cdp_ctl_fops,
};

int cdp_filter_init(void)
{
	int r;

	r = init_srcu_struct(&cdp_filter_srcu);
	if (r)
		return r;
	r = init_srcu_struct(&cdp_hook_srcu);
	if (r)
		goto no_hook_srcu;
	r = -ENOMEM;
	cdp_fbio_pool = mempool_create_kmalloc_pool(CDP_FBIO_RESERVE, sizeof(struct cdp_fbio));
	if (!cdp_fbio_pool)
		goto no_pool;
	cdp_filter_wq = alloc_workqueue("cdp_filter", WQ_UNBOUND, 0);
	if (!cdp_filter_wq)
		goto no_wq;
	r = misc_register(&cdp_ctl_misc);
	if (r)
		goto no_misc;
	return 0;
no_misc:
	destroy_workqueue(cdp_filter_wq);
no_wq:
	mempool_destroy(cdp_fbio_pool);
no_pool:
	cleanup_srcu_struct(&cdp_hook_srcu);
no_hook_srcu:
	cleanup_srcu_struct(&cdp_filter_srcu);
	return r;
}

/* No filter is attached: each holds a module reference.  The hook may still be on (idle). */
void cdp_filter_exit(void)
{
	misc_deregister(&cdp_ctl_misc);
	cancel_delayed_work_sync(&cdp_hook_idle);
	mutex_lock(&cdp_filters_lock);
	if (cdp_hook_on)
		cdp_hook_unregister();
	mutex_unlock(&cdp_filters_lock);
	destroy_workqueue(cdp_filter_wq);	/* a watch's last instructions */
	synchronize_rcu();			/* an end_io's last instructions */
	mempool_destroy(cdp_fbio_pool);
	ftrace_free_filter(&cdp_ftrace_ops);
	cleanup_srcu_struct(&cdp_hook_srcu);
	cleanup_srcu_struct(&cdp_filter_srcu);
}
