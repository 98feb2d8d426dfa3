// SPDX-License-Identifier: GPL-2.0
/*
 * cdp's capture core: every write an entry hands it is copied into a ring
 * buffer shared with a userspace drain service.  The entries are the "cdp"
 * device-mapper target (cdp-dm.c) and the in-place filter (cdp-filter.c);
 * cdp-core.h says what each side does and why it is one module.
 *
 * Options (a dm table's words, or the filter's attach string):
 *   [ring_mb=N] [ring_kb=N] [policy=block|overflow] [wait_ms=N]
 *   [device_id=<32 hex digits>]
 *
 * Protocol (the ABI is cdp_ring_abi.h; docs/ring-abi.md is its prose):
 *
 *  - submit (cdp_io_submit): a WRITE, DISCARD, WRITE_ZEROES or empty
 *    FLUSH bio reserves one record at head under c->lock: the header is written with state BUSY,
 *    seq = ++last_seq, ts_ns = CLOCK_REALTIME clamped so it never goes
 *    backwards, and head is published with a release store.  A WRITE's
 *    payload is then copied out of the bio, outside the lock.  The entries
 *    split bios larger than a quarter of the ring (cdp_max_io_bytes), so
 *    one bio is always one record.
 *  - completion (cdp_io_done): a failed bio's record becomes DISCARDED.  A completed WRITE's
 *    record is sealed: the payload's CRC-32C is computed from the ring
 *    copy, data_crc and hdr_crc are rewritten, and only then COMMITTED is
 *    stored (release).  A WRITE of 32 KiB or more is queued for the sealer,
 *    a work item, so its CRC, the costliest step, runs off the completion
 *    path and the writer's CPU; a smaller one is sealed right here.  The
 *    queue has a slot for every such WRITE the ring can hold, taken when
 *    the record is reserved, so end_io never finds it full.  Other
 *    records are committed at once.  data_crc and hdr_crc are final only
 *    once the state is not BUSY; the consumer reads the state first and
 *    stops at BUSY before it checks anything.  Records are reserved in seq
 *    order and committed in any order.
 *  - A record never crosses the end of the data area: the rest is first
 *    reserved as a PAD record, committed at once.
 *  - A FLUSH record is committed when the flush completes, so every record
 *    reserved before it is durable: a crash-consistent point.  A MARK
 *    (ioctl or "dmsetup message <dev> 0 mark NAME") is committed at once;
 *    the ioctl needs a descriptor opened for writing, or CAP_SYS_ADMIN.
 *  - Full ring: policy=block waits (sleeping, never under the lock) up to
 *    wait_ms for the consumer to move tail, then falls back to overflow;
 *    policy=overflow drops at once.  A dropped write sets the ring's
 *    OVERFLOW flag, counts in "dropped" and sets its chunks in a bitmap.
 *    While in overflow every write is dropped (marking mode).  Once half the
 *    ring is free, one OVERFLOW record per run of set chunks is emitted,
 *    each carrying the ts of the first dropped write.  A backlog can be
 *    32768 runs, so it is emitted in steps of at most 64 records per hold
 *    of c->lock, released between steps so interrupts never stay off for
 *    the whole backlog; a write dropped between two steps sets its chunks
 *    and a later step emits them.  Only when the bitmap is empty is the
 *    flag cleared and recording resumed.  Every changed byte is thus in a
 *    WRITE record or inside an OVERFLOW range.  A dropped bio still goes
 *    to the device, and the consumer copies an OVERFLOW range from the
 *    device as soon as it reads the record: a step's records stay BUSY
 *    until every write dropped before the step has completed (drop epochs,
 *    see cdp_drop_done), so the copy always holds the dropped data.
 *  - cdp_detach (the entry saw every bio complete: dm suspended the
 *    device, the filter drained its own) waits for the sealer, emits what
 *    it can of a pending overflow and sets DETACHED.  The context is
 *    reference counted: an open or mapped /dev/cdp/<name> keeps the ring
 *    alive after the target or filter is gone.
 *
 * The I/O path allocates nothing (the ring, the bitmap and the sealer's
 * queue are allocated by the constructor) and never sleeps under the
 * spinlock.
 */

#include <linux/module.h>
#include <linux/init.h>
#include <linux/bio.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/poll.h>
#include <linux/uaccess.h>
#include <linux/kref.h>
#include <linux/mutex.h>
#include <linux/list.h>
#include <linux/bitmap.h>
#include <linux/crc32c.h>
#include <linux/ktime.h>
#include <linux/delay.h>
#include <linux/sched.h>
#include <linux/sched/clock.h>
#include <linux/version.h>
#include <linux/ctype.h>
#include <linux/kfifo.h>
#include <linux/workqueue.h>
#include <linux/capability.h>
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 12, 0)
#include <linux/hex.h>		/* hex2bin: 7.x kernel.h no longer includes it */
#endif

#include "cdp-core.h"

#define CDP_DEFAULT_RING_MB	16
#define CDP_MAX_RING_MB		1024
#define CDP_DEFAULT_WAIT_MS	1000
#define CDP_MAX_WAIT_MS		60000
#define CDP_BITMAP_BITS		65536	/* most chunks tracked during overflow */
#define CDP_MIN_CHUNK		4096
#define CDP_OVERFLOW_STEP	64	/* OVERFLOW records per lock hold */
#define CDP_SEAL_DEFER_MIN	32768	/* smaller payloads: the hop costs more than the CRC */

static_assert(sizeof(struct cdp_ring_ctl) == CDP_CONTROL_SIZE);
static_assert(sizeof(struct cdp_rec_hdr) == CDP_REC_HDR_SIZE);
static_assert(offsetof(struct cdp_ring_ctl, head) == 64);
static_assert(offsetof(struct cdp_ring_ctl, tail) == 128);
static_assert(offsetof(struct cdp_rec_hdr, hdr_crc) == CDP_HDR_CRC_SPAN);

/* Every live ring, dm target or filter: one namespace for /dev/cdp/<name>. */
static LIST_HEAD(cdp_targets);
static DEFINE_MUTEX(cdp_targets_lock);

struct cdp_c {
	struct kref kref;		/* target + open files */
	struct list_head list;		/* on cdp_targets while registered */
	char name[CDP_NAME_MAX + 1];	/* /dev/cdp/<name> */
	char nodename[CDP_NAME_MAX + 8];/* "cdp/<name>" for devtmpfs */
	char miscname[CDP_NAME_MAX + 8];/* "cdp-<name>" for sysfs */
	struct miscdevice misc;		/* the character device */
	bool misc_registered;		/* misc_register() succeeded */

	void *ring;			/* vmalloc_user(): control page + data area */
	struct cdp_ring_ctl *ctl;	/* == ring */
	u8 *data;			/* == ring + CDP_CONTROL_SIZE */
	u64 data_size;			/* power of two */
	u64 device_bytes;		/* size of the protected range */
	u32 block_size;			/* logical block size of dev */
	unsigned int ring_kb;		/* as given in the table, for status */
	int policy;			/* CDP_POLICY_* */
	unsigned int wait_ms;		/* policy=block: longest wait */
	u8 device_id[16];		/* device_id=, for the control page */

	spinlock_t lock;		/* everything below up to the counters */
	u64 head;			/* producer position */
	u64 tail;			/* last valid tail read from the control page */
	u64 last_seq;			/* seq of the newest record */
	u64 last_ts;			/* newest ts_ns handed out (clamp) */
	bool overflow;			/* marking mode: writes are dropped */
	u64 overflow_ts;		/* ts of the first write dropped in this window */
	unsigned long *bitmap;		/* chunks changed while dropping */
	unsigned long overflow_next;	/* where emission looks next */
	unsigned int drop_epoch;	/* epoch a write dropped now gets */
	atomic_t drops_inflight[2];	/* dropped bios in flight by epoch */
	s64 held[CDP_OVERFLOW_STEP];	/* OVERFLOW records left BUSY ... */
	unsigned int nheld;		/* ... how many */
	unsigned int held_epoch;	/* ... until this epoch has drained */
	unsigned int chunk_shift;	/* chunk = 1 << chunk_shift bytes */
	unsigned long nbits;		/* chunks covering the device */
	bool detached;			/* the target is gone */
	u32 flags;			/* shadow of ctl->flags */
	u64 records;			/* records reserved, PAD excluded */
	u64 write_bytes;		/* payload bytes of WRITE records */
	u64 dropped;			/* writes dropped */
	u64 overflow_records;		/* OVERFLOW records emitted */
	u64 locked_at;			/* sched_clock() at cdp_lock() */
	u64 lock_max_ns;		/* longest c->lock hold (irqs off) */

	atomic64_t committed;		/* records committed */
	atomic64_t discarded;		/* records discarded */
	wait_queue_head_t wq;		/* pollers */

	spinlock_t seal_lock;		/* the sealer's queue */
	DECLARE_KFIFO_PTR(sealq, struct cdp_per_bio); /* completed WRITEs */
	struct cdp_per_bio *sealq_buf;	/* its kvmalloc()ed slots */
	atomic_t seal_slots_taken;	/* deferred WRITEs reserved, not dequeued */
	struct work_struct seal_work;	/* the sealer */
	atomic_t wake_after_seal;	/* a point was committed behind unsealed records */
};

/* Seals completed WRITEs for every target; WQ_MEM_RECLAIM: writeback may wait on it. */
static struct workqueue_struct *cdp_seal_wq;

static void cdp_free(struct kref *kref)
{
	struct cdp_c *c = container_of(kref, struct cdp_c, kref);

	kvfree(c->sealq_buf);
	bitmap_free(c->bitmap);
	vfree(c->ring);
	kfree(c);
}

void cdp_put(struct cdp_c *c)
{
	kref_put(&c->kref, cdp_free);
}

/*
 * c->lock is always taken with interrupts off, so how long it is held is
 * how long this CPU ignores interrupts.  The longest hold is kept and
 * reported by "dmsetup status" (irqsoff_max_ns): work that creeps into the
 * locked sections shows in the guest tests.  sched_clock() is cheap and
 * per-CPU, and a holder cannot migrate.  (On PREEMPT_RT the lock sleeps
 * and interrupts stay on: the figure is then the longest hold.)
 */
static inline void cdp_lock(struct cdp_c *c, unsigned long *irqflags)
	__acquires(&c->lock)
{
	spin_lock_irqsave(&c->lock, *irqflags);
	c->locked_at = sched_clock();
}

static inline void cdp_unlock(struct cdp_c *c, unsigned long irqflags)
	__releases(&c->lock)
{
	u64 held = sched_clock() - c->locked_at;

	if (held > c->lock_max_ns)
		c->lock_max_ns = held;
	spin_unlock_irqrestore(&c->lock, irqflags);
}

/* ---------------------------------------------------------------- the ring */

static inline u32 cdp_crc(const void *p, size_t len)
{
	return ~crc32c(~0U, p, len);
}

static inline struct cdp_rec_hdr *cdp_hdr_at(struct cdp_c *c, u64 pos)
{
	return (struct cdp_rec_hdr *)(c->data + (pos & (c->data_size - 1)));
}

static inline u64 cdp_rec_len(u32 data_len)
{
	return ALIGN((u64)CDP_REC_HDR_SIZE + data_len, CDP_REC_ALIGN);
}

/* Read tail from the control page; a value outside [old tail, head] is ignored. */
static void cdp_refresh_tail(struct cdp_c *c)
{
	u64 t = le64_to_cpu(smp_load_acquire(&c->ctl->tail));

	if (t >= c->tail && t <= c->head && !(t & (CDP_REC_ALIGN - 1)))
		c->tail = t;
}

static inline u64 cdp_free_bytes(struct cdp_c *c)
{
	return c->data_size - (c->head - c->tail);
}

static void cdp_set_flags(struct cdp_c *c, u32 flags)
{
	c->flags = flags;
	WRITE_ONCE(c->ctl->flags, cpu_to_le32(flags));
}

static void cdp_fill_hdr(struct cdp_rec_hdr *h, u16 type, u16 flags, u32 rec_len,
			 u32 data_len, u64 seq, u64 ts, u64 offset, u64 length)
{
	h->magic = cpu_to_le32(CDP_REC_MAGIC);
	h->type = cpu_to_le16(type);
	h->flags = cpu_to_le16(flags);
	h->rec_len = cpu_to_le32(rec_len);
	h->data_len = cpu_to_le32(data_len);
	h->seq = cpu_to_le64(seq);
	h->ts_ns = cpu_to_le64(ts);
	h->offset = cpu_to_le64(offset);
	h->length = cpu_to_le64(length);
	h->data_crc = 0;
	h->hdr_crc = 0;
	h->reserved = 0;
}

/* Seal the header once the payload is in place: both CRCs. */
static void cdp_seal(struct cdp_rec_hdr *h, u32 data_crc)
{
	h->data_crc = cpu_to_le32(data_crc);
	h->hdr_crc = cpu_to_le32(cdp_crc(h, CDP_HDR_CRC_SPAN));
}

static inline void cdp_set_state(struct cdp_rec_hdr *h, u32 state)
{
	smp_store_release(&h->state, cpu_to_le32(state));
}

static inline void cdp_publish_head(struct cdp_c *c)
{
	smp_store_release(&c->ctl->head, cpu_to_le64(c->head));
}

/*
 * Reserve rec_len bytes (PAD first if the record would cross the end).
 * Called with c->lock held.  Returns the position, or -1 without room.
 * The header is written with state BUSY before head moves past it.
 */
static s64 cdp_reserve_locked(struct cdp_c *c, u16 type, u16 flags, u32 data_len,
			      u32 data_crc, u64 offset, u64 length, u64 ts, u64 *seq_out)
{
	u64 rec_len = cdp_rec_len(data_len);
	u64 off = c->head & (c->data_size - 1);
	u64 pad = (off + rec_len > c->data_size) ? c->data_size - off : 0;
	struct cdp_rec_hdr *h;
	s64 pos;

	if (rec_len + pad > cdp_free_bytes(c))
		return -1;
	if (pad) {
		h = cdp_hdr_at(c, c->head);
		h->state = cpu_to_le32(CDP_STATE_BUSY);
		cdp_fill_hdr(h, CDP_REC_PAD, 0, pad, 0, 0, ts, 0, 0);
		cdp_seal(h, 0);
		h->state = cpu_to_le32(CDP_STATE_COMMITTED);
		c->head += pad;
	}
	pos = c->head;
	h = cdp_hdr_at(c, pos);
	h->state = cpu_to_le32(CDP_STATE_BUSY);
	cdp_fill_hdr(h, type, flags, rec_len, data_len, ++c->last_seq, ts, offset, length);
	cdp_seal(h, data_crc);
	c->head += rec_len;
	c->records++;
	*seq_out = c->last_seq;
	/* the BUSY header (and PAD) must be visible before the new head */
	cdp_publish_head(c);
	return pos;
}

/*
 * A record's ts_ns: now, clamped so that it never goes back in ring order.
 * The caller reads the clock (ktime_get_real_ns()) before it takes c->lock:
 * reading it can be slow (an hpet or acpi_pm clocksource is an I/O access,
 * which under qemu can wait for other vCPUs' device emulation), and
 * interrupts are off under the lock.  Called with c->lock held.
 */
static u64 cdp_stamp_locked(struct cdp_c *c, u64 now)
{
	if (now < c->last_ts)
		now = c->last_ts;
	c->last_ts = now;
	return now;
}

/*
 * Remember a dropped write's range, and count its bio as in flight in the
 * current drop epoch until it completes.  Called with c->lock held.
 */
static void cdp_drop_locked(struct cdp_c *c, struct cdp_per_bio *pb,
			    u64 offset, u64 length, u64 ts)
{
	unsigned long first, last;

	pb->drop = c->drop_epoch + 1;
	atomic_inc(&c->drops_inflight[c->drop_epoch]);
	if (!c->overflow) {
		c->overflow = true;
		c->overflow_ts = ts;
		cdp_set_flags(c, c->flags | CDP_RING_F_OVERFLOW);
	}
	c->dropped++;
	WRITE_ONCE(c->ctl->dropped, cpu_to_le64(c->dropped));
	if (!length)
		return;
	first = offset >> c->chunk_shift;
	last = (offset + length - 1) >> c->chunk_shift;
	if (last >= c->nbits)
		last = c->nbits - 1;
	if (first <= last)
		bitmap_set(c->bitmap, first, last - first + 1);
}

/* Commit the OVERFLOW records held back for their drops to complete. */
static void cdp_commit_held_locked(struct cdp_c *c)
{
	unsigned int i;

	for (i = 0; i < c->nheld; i++)
		cdp_set_state(cdp_hdr_at(c, c->held[i]), CDP_STATE_COMMITTED);
	c->nheld = 0;
}

/*
 * One bounded step out of marking mode: up to CDP_OVERFLOW_STEP OVERFLOW
 * records, one per run of set chunks, looking from c->overflow_next on and
 * then once more from the start, since a write dropped between two steps
 * may have set chunks behind the cursor.  Each record's chunks are cleared
 * as it is reserved; the flag is cleared only once the bitmap is empty.
 * The step starts a new drop epoch, so every chunk it emits was set by a
 * write of the previous epochs; the previous step's epoch must have
 * drained first (see cdp_drop_done), which bounds the records held BUSY to
 * one step's.  Called with c->lock held; ts is their ts_ns.  Returns 1
 * when the overflow is resolved, 0 when runs remain, -1 when the ring has
 * no room for the next record, -2 while dropped writes are in flight.
 */
static int cdp_overflow_step_locked(struct cdp_c *c, u64 ts)
{
	__le64 first_ts = cpu_to_le64(c->overflow_ts);
	u32 crc = cdp_crc(&first_ts, sizeof(first_ts));
	unsigned int n, old = c->drop_epoch;
	unsigned long start, end;
	u64 seq;
	s64 pos;
	int r = 0;

	if (atomic_read(&c->drops_inflight[old ^ 1]))
		return -2;	/* cdp_drop_done wakes the consumer */
	cdp_commit_held_locked(c);	/* their epoch (old ^ 1) drained */
	c->drop_epoch = old ^ 1;
	c->held_epoch = old;
	for (n = 0; n < CDP_OVERFLOW_STEP; n++) {
		struct cdp_rec_hdr *h;
		u64 off, len;

		start = find_next_bit(c->bitmap, c->nbits, c->overflow_next);
		if (start >= c->nbits && c->overflow_next)
			start = find_first_bit(c->bitmap, c->nbits);
		if (start >= c->nbits) {
			c->overflow = false;
			c->overflow_next = 0;
			cdp_set_flags(c, c->flags & ~CDP_RING_F_OVERFLOW);
			r = 1;
			break;
		}
		end = find_next_zero_bit(c->bitmap, c->nbits, start);
		off = (u64)start << c->chunk_shift;
		len = min_t(u64, (u64)end << c->chunk_shift, c->device_bytes) - off;
		pos = cdp_reserve_locked(c, CDP_REC_OVERFLOW, 0, CDP_OVERFLOW_PAYLOAD, crc,
					 off, len, ts, &seq);
		if (pos < 0) {
			r = -1;	/* the rest waits for more room */
			break;
		}
		h = cdp_hdr_at(c, pos);
		memcpy(h + 1, &first_ts, sizeof(first_ts));
		memset((u8 *)(h + 1) + sizeof(first_ts), 0,
		       cdp_rec_len(CDP_OVERFLOW_PAYLOAD) - CDP_REC_HDR_SIZE - sizeof(first_ts));
		c->held[c->nheld++] = pos;	/* BUSY for now */
		c->overflow_records++;
		bitmap_clear(c->bitmap, start, end - start);
		c->overflow_next = end;
	}
	if (!atomic_read(&c->drops_inflight[old]))
		cdp_commit_held_locked(c);	/* the usual case */
	return r;
}

/*
 * Leave marking mode if there is room.  min_free is how much must be free
 * to start (half the ring in the I/O path, so recording does not flap;
 * anything at removal).  A backlog can be tens of thousands of records, so
 * it is emitted in steps, and c->lock (with it, interrupts) is released
 * between them, when each step's clock is read: the time interrupts stay
 * off is bounded by one step, not by the backlog.  Meanwhile writes are
 * still dropped into the bitmap, and another caller may take over the
 * steps.  Called with c->lock held and returns with it held, but it may
 * have been released: callers must not rely on what they read before.
 * Returns true once the overflow is resolved.
 */
static bool cdp_emit_overflow(struct cdp_c *c, u64 min_free,
			      unsigned long *irqflags)
{
	u64 now;
	int r;

	if (!c->overflow)
		return true;
	cdp_refresh_tail(c);
	if (cdp_free_bytes(c) < min_free)
		return false;
	do {
		cdp_unlock(c, *irqflags);
		now = ktime_get_real_ns();
		cdp_lock(c, irqflags);
		if (!c->overflow)
			return true;	/* another caller finished it */
		if (c->detached)
			return false;
		cdp_refresh_tail(c);
		r = cdp_overflow_step_locked(c, cdp_stamp_locked(c, now));
	} while (!r);
	return r > 0;	/* -2: drops in flight, not resolved yet */
}

static void cdp_wake(struct cdp_c *c)
{
	if (wq_has_sleeper(&c->wq))
		wake_up_interruptible(&c->wq);
}

/*
 * Batch the consumer's wake-ups: a point worth journaling now (FLUSH) or a
 * ring an eighth full wakes it; otherwise its poll timeout collects the
 * records, in larger batches.
 */
static void cdp_maybe_wake(struct cdp_c *c, bool point)
{
	if (point || READ_ONCE(c->head) - READ_ONCE(c->tail) >= c->data_size / 8)
		cdp_wake(c);
}

/*
 * A dropped bio completed.  An OVERFLOW record tells the consumer to copy
 * its range from the device, and it does so as soon as it reads the
 * record: a dropped write still on its way to the device would be missed
 * (the copy would hold the old bytes while the journal called the range
 * resynced).  So the records of a step are committed only once every
 * write dropped before the step has completed: drops are counted in two
 * epochs, a step starts a new one, and its records wait, BUSY, for the
 * old epoch's count to reach zero.  Interrupts may be off here; the work
 * under the lock is at most CDP_OVERFLOW_STEP stores.
 */
static void cdp_drop_done(struct cdp_c *c, unsigned int epoch)
{
	unsigned long irqflags;
	bool woke = false;

	if (!atomic_dec_and_test(&c->drops_inflight[epoch]))
		return;
	cdp_lock(c, &irqflags);
	if (c->nheld && c->held_epoch == epoch) {
		cdp_commit_held_locked(c);
		woke = true;
	}
	cdp_unlock(c, irqflags);
	if (woke || READ_ONCE(c->overflow))
		cdp_wake(c);	/* its poll emits or reads the records */
}

/* Compute a completed WRITE's CRC from its ring copy, finish the header, commit. */
static void cdp_seal_write(struct cdp_c *c, s64 pos, u32 len)
{
	struct cdp_rec_hdr *h = cdp_hdr_at(c, pos);

	cdp_seal(h, cdp_crc(h + 1, len));
	cdp_set_state(h, CDP_STATE_COMMITTED);
	atomic64_inc(&c->committed);
}

/*
 * Whether a completed WRITE of len bytes is sealed by the sealer rather
 * than in end_io: for a smaller one the hop costs more than its CRC.
 */
static inline bool cdp_seal_deferred(u32 len)
{
	return len >= CDP_SEAL_DEFER_MIN;
}

/*
 * The sealer's queue: why a slot per record is taken at reservation.
 *
 * A large WRITE's CRC must not be computed in end_io (completion context,
 * often a hard or soft interrupt), and end_io may neither block nor
 * allocate.  So every WRITE that will be deferred takes a slot when it is
 * reserved, under c->lock, and gives it back when the sealer dequeues it
 * (or when its bio fails): the queue can then never be full in end_io.
 * The queue is sized so that slots never run out with a consumer that
 * follows the protocol: a deferred record stays BUSY until it is sealed,
 * the consumer cannot release past a BUSY record, so all of them lie in
 * the data area at once, and there is room there for at most
 * data_size / cdp_rec_len(CDP_SEAL_DEFER_MIN) of them (16 bytes of queue
 * per 32 KiB of ring).  A consumer that releases BUSY records early can
 * exhaust the slots: the WRITE then finds no room and is dropped into the
 * overflow bitmap like any other, which keeps every byte accounted for.
 *
 * The other way, a sealer that scans the ring for completed records, was
 * not taken: it needs a state between BUSY and COMMITTED that the consumer
 * would see, and a record's length read back from shared memory, which the
 * kernel never trusts (see struct cdp_per_bio).
 */
static unsigned int cdp_seal_slots(u64 data_size)
{
	u64 most = div64_u64(data_size, cdp_rec_len(CDP_SEAL_DEFER_MIN));

	return roundup_pow_of_two(max_t(u64, most, 2));
}

/*
 * Whether a record may be reserved as far as the sealer's queue goes.
 * Slots are taken only under c->lock, so the count cannot pass the size.
 */
static bool cdp_seal_slot_free_locked(struct cdp_c *c, u16 type, u32 len)
{
	return type != CDP_REC_WRITE || !cdp_seal_deferred(len) ||
	       atomic_read(&c->seal_slots_taken) < kfifo_size(&c->sealq);
}

static void cdp_sealer(struct work_struct *work)
{
	struct cdp_c *c = container_of(work, struct cdp_c, seal_work);
	struct cdp_per_bio item;

	while (kfifo_out_spinlocked(&c->sealq, &item, 1, &c->seal_lock)) {
		atomic_dec(&c->seal_slots_taken);
		cdp_seal_write(c, item.pos, item.len);
	}
	cdp_maybe_wake(c, atomic_xchg(&c->wake_after_seal, 0));
}

/*
 * Reserve a record for an I/O.  Returns its position, or -1 when the write
 * was dropped (its range is then in the overflow bitmap) or, for FLUSH,
 * when there was no room (a lost point, never lost data).  data_crc is 0
 * until a WRITE is sealed.
 */
static s64 cdp_reserve_io(struct cdp_c *c, struct cdp_per_bio *pb, struct bio *bio,
			  bool can_wait, u16 type, u16 flags, u32 data_len, u64 offset,
			  u64 length)
{
	bool may_wait = c->policy == CDP_POLICY_BLOCK && can_wait &&
			!(bio->bi_opf & REQ_NOWAIT);
	unsigned long deadline = jiffies + msecs_to_jiffies(c->wait_ms);
	unsigned long irqflags;
	bool resolved;
	u64 seq, ts;
	s64 pos;

	for (;;) {
		u64 now = ktime_get_real_ns();

		pos = -1;
		cdp_lock(c, &irqflags);
		if (c->detached)
			break;
		resolved = cdp_emit_overflow(c, c->data_size / 2, &irqflags);
		/* after the OVERFLOWs: ts never goes back in ring order */
		ts = cdp_stamp_locked(c, now);
		if (resolved && cdp_seal_slot_free_locked(c, type, data_len)) {
			cdp_refresh_tail(c);
			pos = cdp_reserve_locked(c, type, flags, data_len, 0, offset, length,
						 ts, &seq);
			if (pos >= 0) {
				if (type == CDP_REC_WRITE) {
					c->write_bytes += data_len;
					if (cdp_seal_deferred(data_len))
						atomic_inc(&c->seal_slots_taken);
				}
				break;
			}
		} else if (!resolved) {
			may_wait = false;	/* marking mode: drop at once */
		}
		if (!may_wait || time_after(jiffies, deadline)) {
			if (type != CDP_REC_FLUSH)
				cdp_drop_locked(c, pb, offset, length, ts);
			break;
		}
		cdp_unlock(c, irqflags);
		/* the consumer moves tail by a plain store: look again soon */
		cdp_wake(c);
		schedule_timeout_uninterruptible(1);
	}
	cdp_unlock(c, irqflags);
	return pos;
}

/* Copy a WRITE bio's payload into its reserved record. */
static void cdp_copy_bio(struct cdp_c *c, s64 pos, struct bio *bio, u32 len)
{
	struct cdp_rec_hdr *h = cdp_hdr_at(c, pos);
	u8 *dst = (u8 *)(h + 1);
	u64 pad = cdp_rec_len(len) - CDP_REC_HDR_SIZE - len;
	struct bvec_iter iter;
	struct bio_vec bv;
	u32 done = 0;

	bio_for_each_segment(bv, bio, iter) {
		if (WARN_ON_ONCE(done + bv.bv_len > len))
			break;
		memcpy_from_bvec(dst + done, &bv);
		done += bv.bv_len;
	}
	if (pad)
		memset(dst + len, 0, pad);
}

/*
 * Whether a mark name is printable UTF-8.  Names end up on users'
 * terminals ("cdp points", the TUI), so a name must not be able to move
 * the cursor, retitle the window or rewrite the screen.  Refused: C0
 * controls and DEL (ESC, which starts every escape sequence, among them),
 * C1 controls (U+0080..U+009F: CSI and OSC among them), and anything that
 * is not well-formed UTF-8: a stray continuation byte, a truncated
 * sequence, an overlong form (which could hide a control), a surrogate, a
 * code point past U+10FFFF.
 */
static bool cdp_printable_utf8(const u8 *s, u32 len)
{
	u32 i = 0;

	while (i < len) {
		u32 cp, min, n, k;
		u8 b = s[i];

		if (b < 0x80) {
			if (b < 0x20 || b == 0x7f)
				return false;
			i++;
			continue;
		}
		if (b >= 0xf8 || b < 0xc0)
			return false;	/* not a lead byte */
		if (b >= 0xf0) {
			n = 3;
			cp = b & 0x07;
			min = 0x10000;
		} else if (b >= 0xe0) {
			n = 2;
			cp = b & 0x0f;
			min = 0x800;
		} else {
			n = 1;
			cp = b & 0x1f;
			min = 0x80;
		}
		if (len - i <= n)
			return false;	/* truncated */
		for (k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		/* overlong, past U+10FFFF, a surrogate, or C1 */
		if (cp < min || cp > 0x10ffff ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp <= 0x9f)
			return false;
		i += n + 1;
	}
	return true;
}

/*
 * Add a MARK record (the ioctl and "dmsetup message" both come here);
 * returns 0, or -EINVAL (not 1..255 bytes of printable UTF-8), -ENOSPC or
 * -ENODEV.
 */
int cdp_add_mark(struct cdp_c *c, const u8 *name, u32 len, u64 *seq, u64 *ts)
{
	u64 now = ktime_get_real_ns();
	unsigned long irqflags;
	struct cdp_rec_hdr *h;
	u8 *dst;
	s64 pos;
	u32 crc;
	int r = 0;

	if (!len || len > CDP_MAX_MARK_NAME || !cdp_printable_utf8(name, len))
		return -EINVAL;
	crc = cdp_crc(name, len);

	cdp_lock(c, &irqflags);
	if (!c->detached)
		cdp_emit_overflow(c, c->data_size / 2, &irqflags);
	if (c->detached) {	/* the emission may have dropped the lock */
		r = -ENODEV;
		goto out;
	}
	/* after the OVERFLOW records: ts never goes back in ring order */
	*ts = cdp_stamp_locked(c, now);
	cdp_refresh_tail(c);
	pos = cdp_reserve_locked(c, CDP_REC_MARK, 0, len, crc, 0, 0, *ts, seq);
	if (pos < 0) {
		r = -ENOSPC;
		goto out;
	}
	h = cdp_hdr_at(c, pos);
	dst = (u8 *)(h + 1);
	memcpy(dst, name, len);
	memset(dst + len, 0, cdp_rec_len(len) - CDP_REC_HDR_SIZE - len);
	cdp_set_state(h, CDP_STATE_COMMITTED);
out:
	cdp_unlock(c, irqflags);
	if (!r)
		cdp_wake(c);
	return r;
}

/* ------------------------------------------------------ the character device */

static int cdp_open(struct inode *inode, struct file *file)
{
	/* misc_open() holds misc_mtx: the target cannot deregister meanwhile */
	struct cdp_c *c = container_of(file->private_data, struct cdp_c, misc);

	kref_get(&c->kref);
	file->private_data = c;
	return 0;
}

static int cdp_release(struct inode *inode, struct file *file)
{
	cdp_put(file->private_data);
	return 0;
}

/*
 * Page 0 (the control page) may be mapped read/write and shared; anything
 * that reaches into the data area is read only.
 */
static int cdp_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct cdp_c *c = file->private_data;
	u64 total = CDP_CONTROL_SIZE + c->data_size;
	u64 start = (u64)vma->vm_pgoff << PAGE_SHIFT;
	u64 len = vma->vm_end - vma->vm_start;

	if (start >= total || len > total - start)
		return -EINVAL;
	if (start + len > CDP_CONTROL_SIZE) {
		if (vma->vm_flags & VM_WRITE)
			return -EPERM;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
		vm_flags_clear(vma, VM_MAYWRITE);
#else
		vma->vm_flags &= ~VM_MAYWRITE;
#endif
	}
	return remap_vmalloc_range(vma, c->ring, vma->vm_pgoff);
}

static bool cdp_ready(struct cdp_c *c)
{
	unsigned long irqflags;
	bool ready = false;

	cdp_lock(c, &irqflags);
	/* the consumer may have made room: resolve a pending overflow */
	if (!c->detached)
		cdp_emit_overflow(c, c->data_size / 2, &irqflags);
	cdp_refresh_tail(c);
	if (c->tail != c->head) {
		struct cdp_rec_hdr *h = cdp_hdr_at(c, c->tail);

		ready = le32_to_cpu(smp_load_acquire(&h->state)) != CDP_STATE_BUSY;
	}
	cdp_unlock(c, irqflags);
	return ready;
}

static __poll_t cdp_poll(struct file *file, poll_table *wait)
{
	struct cdp_c *c = file->private_data;
	__poll_t mask = 0;

	poll_wait(file, &c->wq, wait);
	if (cdp_ready(c))
		mask |= EPOLLIN | EPOLLRDNORM;
	if (READ_ONCE(c->detached))
		mask |= EPOLLHUP;
	return mask;
}

static void cdp_fill_info(struct cdp_c *c, struct cdp_ioc_info *info)
{
	unsigned long irqflags;

	memset(info, 0, sizeof(*info));
	cdp_lock(c, &irqflags);
	cdp_refresh_tail(c);
	info->version = CDP_RING_VERSION;
	info->policy = c->policy;
	info->device_bytes = c->device_bytes;
	info->data_size = c->data_size;
	info->block_size = c->block_size;
	info->wait_ms = c->wait_ms;
	info->records = c->records;
	info->write_bytes = c->write_bytes;
	info->dropped = c->dropped;
	info->overflow_records = c->overflow_records;
	info->head = c->head;
	info->tail = c->tail;
	info->last_seq = c->last_seq;
	info->flags = c->flags;
	cdp_unlock(c, irqflags);
	info->committed = atomic64_read(&c->committed);
	info->discarded = atomic64_read(&c->discarded);
	strscpy(info->name, c->name, sizeof(info->name));
}

static long cdp_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct cdp_c *c = file->private_data;
	void __user *uarg = (void __user *)arg;

	switch (cmd) {
	case CDP_IOC_MARK: {
		struct cdp_ioc_mark m;
		int r;

		/*
		 * A MARK adds to the ring: like write(2), it needs a
		 * descriptor opened for writing, and like write(2) on a
		 * read-only one it fails with -EBADF: the descriptor is
		 * wrong, not the caller (-EPERM would say the caller lacks
		 * a right), and opening the ring O_WRONLY or O_RDWR fixes
		 * it.  CAP_SYS_ADMIN, which "dmsetup message ... mark"
		 * needs, may mark through any descriptor.
		 */
		if (!(file->f_mode & FMODE_WRITE) && !capable(CAP_SYS_ADMIN))
			return -EBADF;
		if (copy_from_user(&m, uarg, sizeof(m)))
			return -EFAULT;
		if (m.name_len > CDP_MAX_MARK_NAME || m.reserved)
			return -EINVAL;
		r = cdp_add_mark(c, m.name, m.name_len, &m.seq, &m.ts_ns);
		if (r)
			return r;
		if (copy_to_user(uarg, &m, sizeof(m)))
			return -EFAULT;
		return 0;
	}
	case CDP_IOC_INFO: {
		struct cdp_ioc_info info;

		cdp_fill_info(c, &info);
		if (copy_to_user(uarg, &info, sizeof(info)))
			return -EFAULT;
		return 0;
	}
	}
	return -ENOTTY;
}

static const struct file_operations cdp_fops = {
	.owner		= THIS_MODULE,
	.open		= cdp_open,
	.release	= cdp_release,
	.mmap		= cdp_mmap,
	.poll		= cdp_poll,
	.unlocked_ioctl	= cdp_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.llseek		= noop_llseek,
};

/* ---------------------------------------------------------- building a context */

bool cdp_valid_name(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > CDP_NAME_MAX || s[0] == '.')
		return false;
	for (; *s; s++)
		if (!isalnum(*s) && *s != '-' && *s != '_' && *s != '.')
			return false;
	return true;
}

static bool cdp_name_taken(const char *name)
{
	struct cdp_c *o;

	list_for_each_entry(o, &cdp_targets, list)
		if (!strcmp(o->name, name))
			return true;
	return false;
}

int cdp_set_name(struct cdp_c *c, const char *name, const char **err)
{
	if (!cdp_valid_name(name)) {
		*err = "Name must be 1-31 of [A-Za-z0-9_.-], not starting with '.'";
		return -EINVAL;
	}
	strscpy(c->name, name, sizeof(c->name));
	return 0;
}

int cdp_parse_opt(struct cdp_c *c, const char *opt, const char **err)
{
	unsigned int v;
	char dummy;

	if (sscanf(opt, "ring_mb=%u%c", &v, &dummy) == 1) {
		if (!v || v > CDP_MAX_RING_MB || !is_power_of_2(v)) {
			*err = "ring_mb must be a power of two from 1 to 1024";
			return -EINVAL;
		}
		c->ring_kb = v * 1024;
	} else if (sscanf(opt, "ring_kb=%u%c", &v, &dummy) == 1) {
		if (v < CDP_MIN_DATA_SIZE / 1024 || v > CDP_MAX_RING_MB * 1024 || !is_power_of_2(v)) {
			*err = "ring_kb must be a power of two from 64 to 1048576";
			return -EINVAL;
		}
		c->ring_kb = v;
	} else if (!strcmp(opt, "policy=block")) {
		c->policy = CDP_POLICY_BLOCK;
	} else if (!strcmp(opt, "policy=overflow")) {
		c->policy = CDP_POLICY_OVERFLOW;
	} else if (sscanf(opt, "wait_ms=%u%c", &v, &dummy) == 1) {
		if (v > CDP_MAX_WAIT_MS) {
			*err = "wait_ms must be at most 60000";
			return -EINVAL;
		}
		c->wait_ms = v;
	} else if (!strncmp(opt, "device_id=", 10)) {
		/* the identity userspace gives the device, for the consumer */
		if (strlen(opt + 10) != 2 * sizeof(c->device_id) ||
		    hex2bin(c->device_id, opt + 10, sizeof(c->device_id))) {
			*err = "device_id must be 32 hex digits";
			return -EINVAL;
		}
	} else {
		*err = "Unknown option (ring_mb=N ring_kb=N policy=block|overflow wait_ms=N device_id=HEX32)";
		return -EINVAL;
	}
	return 0;
}

/*
 * A context holding only its defaults: every resource pointer is NULL and
 * misc_registered false, which is what lets cdp_detach() and cdp_put()
 * take down a context from any stage of construction.
 */
struct cdp_c *cdp_alloc_context(void)
{
	struct cdp_c *c = kzalloc(sizeof(*c), GFP_KERNEL);

	if (!c)
		return NULL;
	kref_init(&c->kref);
	INIT_LIST_HEAD(&c->list);
	spin_lock_init(&c->lock);
	spin_lock_init(&c->seal_lock);
	INIT_WORK(&c->seal_work, cdp_sealer);
	atomic_set(&c->wake_after_seal, 0);
	atomic_set(&c->seal_slots_taken, 0);
	atomic_set(&c->drops_inflight[0], 0);
	atomic_set(&c->drops_inflight[1], 0);
	init_waitqueue_head(&c->wq);
	atomic64_set(&c->committed, 0);
	atomic64_set(&c->discarded, 0);
	c->ring_kb = CDP_DEFAULT_RING_MB * 1024;
	c->policy = CDP_POLICY_BLOCK;
	c->wait_ms = CDP_DEFAULT_WAIT_MS;
	return c;
}

/*
 * What the I/O path needs, sized from the options and the device: the
 * overflow bitmap, the sealer's queue, and the ring with its control page
 * filled in.
 */
int cdp_alloc_ring(struct cdp_c *c, u64 device_bytes, u32 block_size, const char **err)
{
	unsigned int slots;
	u64 chunk;

	c->device_bytes = device_bytes;
	c->block_size = block_size;
	c->data_size = (u64)c->ring_kb * 1024;

	/* bitmap of chunks for overflow tracking: a power-of-two chunk size */
	chunk = CDP_MIN_CHUNK;
	while (div64_u64(c->device_bytes + chunk - 1, chunk) > CDP_BITMAP_BITS)
		chunk <<= 1;
	c->chunk_shift = ilog2(chunk);
	c->nbits = div64_u64(c->device_bytes + chunk - 1, chunk);
	c->bitmap = bitmap_zalloc(max_t(unsigned long, c->nbits, 1), GFP_KERNEL);
	if (!c->bitmap) {
		*err = "Cannot allocate the overflow bitmap";
		return -ENOMEM;
	}

	slots = cdp_seal_slots(c->data_size);
	c->sealq_buf = kvmalloc_array(slots, sizeof(*c->sealq_buf), GFP_KERNEL);
	if (!c->sealq_buf ||
	    kfifo_init(&c->sealq, c->sealq_buf, slots * sizeof(*c->sealq_buf))) {
		*err = "Cannot allocate the sealer's queue";
		return -ENOMEM;
	}

	c->ring = vmalloc_user(CDP_CONTROL_SIZE + c->data_size);
	if (!c->ring) {
		*err = "Cannot allocate the ring (try a smaller ring_mb)";
		return -ENOMEM;
	}
	c->ctl = c->ring;
	c->data = (u8 *)c->ring + CDP_CONTROL_SIZE;
	c->ctl->magic = cpu_to_le32(CDP_RING_MAGIC);
	c->ctl->version = cpu_to_le32(CDP_RING_VERSION);
	c->ctl->data_size = cpu_to_le64(c->data_size);
	c->ctl->device_bytes = cpu_to_le64(c->device_bytes);
	c->ctl->block_size = cpu_to_le32(c->block_size);
	memcpy(c->ctl->device_id, c->device_id, sizeof(c->device_id));
	return 0;
}

/*
 * Claim the name and create /dev/cdp/<name>.  The constructor's last step:
 * once a consumer can open the ring, nothing in the constructor can fail.
 */
int cdp_register(struct cdp_c *c, const char **err)
{
	int r;

	mutex_lock(&cdp_targets_lock);
	if (cdp_name_taken(c->name)) {
		mutex_unlock(&cdp_targets_lock);
		*err = "Another cdp target already uses this name";
		return -EBUSY;
	}
	snprintf(c->miscname, sizeof(c->miscname), "cdp-%s", c->name);
	snprintf(c->nodename, sizeof(c->nodename), "cdp/%s", c->name);
	c->misc.minor = MISC_DYNAMIC_MINOR;
	c->misc.name = c->miscname;
	c->misc.nodename = c->nodename;
	c->misc.mode = 0600;
	c->misc.fops = &cdp_fops;
	r = misc_register(&c->misc);
	if (r) {
		mutex_unlock(&cdp_targets_lock);
		*err = "Cannot register the character device";
		return r;
	}
	c->misc_registered = true;
	list_add(&c->list, &cdp_targets);
	mutex_unlock(&cdp_targets_lock);
	return 0;
}

/*
 * The end of capture, from whatever stage the context reached: an entry's
 * error path and its removal both come here, so teardown is written once.
 * Each step looks whether its part was set up.  A ring that exists gets
 * its end: every bio has completed (the entry made sure: dm suspends the
 * device, the filter waits for its bios), so the sealer is flushed, what
 * fits of a pending overflow is emitted, and DETACHED tells a consumer
 * that nothing follows head.  The caller still holds its reference
 * (cdp_put): open files keep the ring until they close.
 */
void cdp_detach(struct cdp_c *c)
{
	unsigned long irqflags;

	if (c->ring) {
		flush_work(&c->seal_work);
		cdp_lock(c, &irqflags);
		cdp_emit_overflow(c, 0, &irqflags);
		cdp_commit_held_locked(c);	/* no bio is in flight */
		c->detached = true;
		cdp_set_flags(c, c->flags | CDP_RING_F_DETACHED);
		cdp_unlock(c, irqflags);
		wake_up_interruptible_all(&c->wq);
	}
	if (c->misc_registered) {
		mutex_lock(&cdp_targets_lock);
		list_del(&c->list);
		misc_deregister(&c->misc);
		c->misc_registered = false;
		mutex_unlock(&cdp_targets_lock);
	}
}

/* ------------------------------------------------------------ the I/O path */

void cdp_io_init(struct cdp_per_bio *pb)
{
	pb->pos = -1;
	pb->len = 0;
	pb->drop = 0;
}

static u16 cdp_rec_flags(struct bio *bio)
{
	u16 flags = 0;

	if (bio->bi_opf & REQ_FUA)
		flags |= CDP_RECF_FUA;
	if (bio->bi_opf & REQ_PREFLUSH)
		flags |= CDP_RECF_PREFLUSH;
	return flags;
}

/*
 * A bio on its way to the device, offset bytes into the protected range:
 * reserve its record (and copy a WRITE's payload).  The entry calls it
 * before the bio goes down and keeps pb until cdp_io_done().  A WRITE
 * longer than cdp_max_io_bytes() does not fit one record: it is dropped
 * (cdp_io_drop), so its range is copied from the device once it completed;
 * dm core never sends one (max_io_len), the filter may.  A WRITE with
 * data and REQ_PREFLUSH gets only its WRITE record here: an entry that
 * sees such bios (the filter; dm core splits them) calls cdp_io_flush()
 * first.  can_wait: the caller may sleep (policy=block waits for room only
 * then; the filter sees bios from contexts that may not).
 */
void cdp_io_submit(struct cdp_c *c, struct cdp_per_bio *pb, struct bio *bio, u64 offset,
		   bool can_wait)
{
	u64 length = bio->bi_iter.bi_size;
	u16 flags = cdp_rec_flags(bio);

	switch (bio_op(bio)) {
	case REQ_OP_WRITE:
		if (!length) {
			/* an empty flush */
			if (bio->bi_opf & REQ_PREFLUSH)
				pb->pos = cdp_reserve_io(c, pb, bio, can_wait, CDP_REC_FLUSH, flags, 0, 0, 0);
			break;
		}
		if (length > cdp_max_io_bytes(c)) {
			/* too long for one record (the filter does not split) */
			cdp_io_drop(c, pb, offset, length);
			break;
		}
		pb->pos = cdp_reserve_io(c, pb, bio, can_wait, CDP_REC_WRITE, flags, length, offset, length);
		if (pb->pos >= 0) {
			pb->len = length;
			cdp_copy_bio(c, pb->pos, bio, length);
		}
		break;
	case REQ_OP_DISCARD:
		pb->pos = cdp_reserve_io(c, pb, bio, can_wait, CDP_REC_DISCARD, flags, 0, offset, length);
		break;
	case REQ_OP_WRITE_ZEROES:
		pb->pos = cdp_reserve_io(c, pb, bio, can_wait, CDP_REC_WRITE_ZEROES, flags, 0, offset, length);
		break;
	case REQ_OP_SECURE_ERASE:
		/* the device decides what the range reads as: copy it afterwards */
		cdp_io_drop(c, pb, offset, length);
		break;
	default:
		break;
	}
}

/*
 * A change the ring cannot hold as a record: a WRITE too long for one, a
 * write that covers only part of the protected range, a SECURE_ERASE
 * (whose result the device decides).  Its range goes into the overflow
 * bitmap as a dropped write's does; the OVERFLOW record that covers it
 * waits for this bio's completion (drop epochs), then the consumer copies
 * the range from the device.
 */
void cdp_io_drop(struct cdp_c *c, struct cdp_per_bio *pb, u64 offset, u64 length)
{
	u64 now = ktime_get_real_ns();
	unsigned long irqflags;

	cdp_lock(c, &irqflags);
	if (!c->detached)
		cdp_drop_locked(c, pb, offset, length, cdp_stamp_locked(c, now));
	cdp_unlock(c, irqflags);
}

/*
 * The FLUSH record of a bio that also carries data (REQ_PREFLUSH): its own
 * per-bio slot, reserved before the WRITE's, as dm core orders them when
 * it splits such a bio into an empty flush and the data.
 */
void cdp_io_flush(struct cdp_c *c, struct cdp_per_bio *pb, struct bio *bio, bool can_wait)
{
	pb->pos = cdp_reserve_io(c, pb, bio, can_wait, CDP_REC_FLUSH, cdp_rec_flags(bio), 0, 0, 0);
}

/*
 * The bio of pb completed with error: seal and commit its record, or mark
 * it DISCARDED when the device failed it (the consumer skips it: the data
 * is not on the device).  Completion context: may not sleep.
 */
void cdp_io_done(struct cdp_c *c, struct cdp_per_bio *pb, blk_status_t error)
{
	struct cdp_per_bio item = *pb;
	struct cdp_rec_hdr *h;

	if (item.drop) {
		pb->drop = 0;
		cdp_drop_done(c, item.drop - 1);
	}
	if (item.pos < 0)
		return;
	pb->pos = -1;
	h = cdp_hdr_at(c, item.pos);
	if (error != BLK_STS_OK) {
		cdp_set_state(h, CDP_STATE_DISCARDED);
		atomic64_inc(&c->discarded);
		if (cdp_seal_deferred(item.len))
			atomic_dec(&c->seal_slots_taken);
		cdp_maybe_wake(c, false);
	} else if (item.len) {
		if (!cdp_seal_deferred(item.len)) {
			cdp_seal_write(c, item.pos, item.len);
			cdp_maybe_wake(c, false);
		} else if (kfifo_in_spinlocked(&c->sealq, &item, 1, &c->seal_lock)) {
			queue_work(cdp_seal_wq, &c->seal_work);
		} else {
			/* cannot happen: the record took its slot when reserved */
			WARN_ON_ONCE(1);
			cdp_seal_write(c, item.pos, item.len);
			cdp_maybe_wake(c, false);
		}
	} else {
		cdp_set_state(h, CDP_STATE_COMMITTED);
		atomic64_inc(&c->committed);
		/* the consumer cannot pass unsealed WRITEs: wake it after them too */
		if (!kfifo_is_empty(&c->sealq))
			atomic_set(&c->wake_after_seal, 1);
		cdp_maybe_wake(c, true);
	}
}

/* ------------------------------------------------------- what entries read */

const char *cdp_name(const struct cdp_c *c)
{
	return c->name;
}

/* The longest bio one record holds: a quarter of the ring. */
u64 cdp_max_io_bytes(const struct cdp_c *c)
{
	return c->data_size / 4;
}

/* The counters, as "dmsetup status" and the filter's ctl show them. */
unsigned int cdp_format_status(struct cdp_c *c, char *buf, unsigned int len)
{
	unsigned long irqflags;
	u64 records, bytes, dropped, used, ovf, lock_max;
	bool overflow;

	cdp_lock(c, &irqflags);
	cdp_refresh_tail(c);
	records = c->records;
	bytes = c->write_bytes;
	dropped = c->dropped;
	used = c->head - c->tail;
	ovf = c->overflow_records;
	overflow = c->overflow;
	lock_max = c->lock_max_ns;
	cdp_unlock(c, irqflags);
	return scnprintf(buf, len,
			 "records=%llu bytes=%llu dropped=%llu fill=%llu/%llu overflow=%s overflow_records=%llu committed=%lld discarded=%lld irqsoff_max_ns=%llu",
			 records, bytes, dropped, used, c->data_size,
			 overflow ? "yes" : "no", ovf,
			 (long long)atomic64_read(&c->committed),
			 (long long)atomic64_read(&c->discarded), lock_max);
}

/* The options back, as a dm table line ends. */
unsigned int cdp_format_table(struct cdp_c *c, char *buf, unsigned int len)
{
	unsigned int sz;

	if (c->ring_kb % 1024)
		sz = scnprintf(buf, len, "ring_kb=%u", c->ring_kb);
	else
		sz = scnprintf(buf, len, "ring_mb=%u", c->ring_kb / 1024);
	sz += scnprintf(buf + sz, len - sz, " policy=%s wait_ms=%u",
			c->policy == CDP_POLICY_BLOCK ? "block" : "overflow", c->wait_ms);
	if (memchr_inv(c->device_id, 0, sizeof(c->device_id)))
		sz += scnprintf(buf + sz, len - sz, " device_id=%*phN",
				(int)sizeof(c->device_id), c->device_id);
	return sz;
}

/* ---------------------------------------------------------------- the module */

static int __init cdp_init(void)
{
	int r;

	cdp_seal_wq = alloc_workqueue("cdp_seal", WQ_UNBOUND | WQ_MEM_RECLAIM, 0);
	if (!cdp_seal_wq)
		return -ENOMEM;
	r = cdp_filter_init();
	if (r)
		goto no_filter;
	r = cdp_dm_init();
	if (r)
		goto no_dm;
	return 0;
no_dm:
	cdp_filter_exit();
no_filter:
	destroy_workqueue(cdp_seal_wq);
	return r;
}

static void __exit cdp_exit(void)
{
	cdp_dm_exit();
	destroy_workqueue(cdp_seal_wq);
}

module_init(cdp_init);
module_exit(cdp_exit);

MODULE_DESCRIPTION("cdp continuous data protection: every write into a ring (dm target and in-place filter)");
MODULE_AUTHOR("cdp authors");
MODULE_LICENSE("GPL");
