/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The capture core shared by cdp's two ways in: the "cdp" device-mapper
 * target (cdp-dm.c) and the in-place device filter (cdp-filter.c).
 *
 * The core owns everything a consumer sees: the ring and its records,
 * sealing, the full-ring policies and overflow tracking, marks, DETACHED,
 * and the /dev/cdp/NAME character device with its ioctls (cdp-core.c).  An
 * entry only finds the bios, hands each to cdp_io_submit() before it goes
 * to the device and to cdp_io_done() once it completed, and calls
 * cdp_detach() when it lets go of the device.  Neither entry touches the
 * ring: struct cdp_c is opaque to them.
 *
 * Module layout: one module, dm-cdp.ko, holds the core and both entries.
 * Why not a core module and two users: the core would have to export its
 * functions (an in-kernel ABI between three modules that must always be
 * loaded at matching versions), /dev/cdp/NAME names would be shared across
 * modules, and an administrator would have two more modules to load,
 * install and sign.  One module keeps every symbol static to it, loads
 * with one insmod, and is refused by rmmod as a whole while any ring is in
 * use (device-mapper holds it for a target, the filter holds it for each
 * attached device).
 */
#ifndef CDP_CORE_H
#define CDP_CORE_H

#include <linux/types.h>
#include <linux/bio.h>
#include <linux/blk_types.h>

#include "cdp_ring_abi.h"

#define CDP_NAME_MAX		31

struct cdp_c;

/*
 * Where a bio's record lives (or -1) and its payload length: kept by the
 * entry for every bio (dm's per-bio data, the filter's hook), and, once a
 * WRITE completed, the sealer's queue item.  The length is kept here, not
 * read back from the ring: the ring is shared memory, and a consumer that
 * released a BUSY record too early could have let its space be reused.
 * Nothing the kernel writes or reads through a length or position then
 * depends on the ring's contents.
 */
struct cdp_per_bio {
	s64 pos;			/* ring position of the record */
	u32 len;			/* WRITE payload bytes; 0 otherwise */
	u32 drop;			/* dropped: 1 + its drop epoch */
};

/* Building a context, in this order; *err is a message for the caller. */
struct cdp_c *cdp_alloc_context(void);
bool cdp_valid_name(const char *s);
int cdp_set_name(struct cdp_c *c, const char *name, const char **err);
int cdp_parse_opt(struct cdp_c *c, const char *opt, const char **err);
int cdp_alloc_ring(struct cdp_c *c, u64 device_bytes, u32 block_size, const char **err);
int cdp_register(struct cdp_c *c, const char **err);

/* The end of capture: no bio of this context is in flight any more. */
void cdp_detach(struct cdp_c *c);
void cdp_put(struct cdp_c *c);

/* The I/O path. */
void cdp_io_init(struct cdp_per_bio *pb);
void cdp_io_submit(struct cdp_c *c, struct cdp_per_bio *pb, struct bio *bio, u64 offset,
		   bool can_wait);
void cdp_io_drop(struct cdp_c *c, struct cdp_per_bio *pb, u64 offset, u64 length);
void cdp_io_flush(struct cdp_c *c, struct cdp_per_bio *pb, struct bio *bio, bool can_wait);
void cdp_io_done(struct cdp_c *c, struct cdp_per_bio *pb, blk_status_t error);

/* What the entries read. */
const char *cdp_name(const struct cdp_c *c);
u64 cdp_max_io_bytes(const struct cdp_c *c);
unsigned int cdp_format_status(struct cdp_c *c, char *buf, unsigned int len);
unsigned int cdp_format_table(struct cdp_c *c, char *buf, unsigned int len);
int cdp_add_mark(struct cdp_c *c, const u8 *name, u32 len, u64 *seq, u64 *ts);

/* The entries' setup, called by the module's init and exit (cdp-core.c). */
int cdp_dm_init(void);
void cdp_dm_exit(void);
int cdp_filter_init(void);
void cdp_filter_exit(void);

#endif /* CDP_CORE_H */
