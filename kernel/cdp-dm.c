// SPDX-License-Identifier: GPL-2.0
/*
 * The "cdp" device-mapper target: cdp's first way into the capture core
 * (cdp-core.c).  A pass-through target whose every bio is handed to the
 * core on the way down (map) and on the way back (end_io).
 *
 * Table:  0 <sectors> cdp <device> <name> [ring_mb=N] [ring_kb=N]
 *                     [policy=block|overflow] [wait_ms=N]
 *                     [device_id=<32 hex digits>]
 *
 * dm core does for this entry what the filter must do by itself: it splits
 * bios larger than a quarter of the ring (max_io_len), sends a REQ_PREFLUSH
 * with data as an empty flush and then the data, and suspends the device
 * (every bio completed) before the destructor runs.
 */

#include <linux/device-mapper.h>
#include <linux/module.h>
#include <linux/slab.h>

#include "cdp-core.h"

#define DM_MSG_PREFIX "cdp"

struct cdp_dm {
	struct cdp_c *c;		/* the capture context */
	struct dm_dev *dev;		/* the protected device */
};

/*
 * Take a target down from whatever stage its constructor reached; the
 * core's teardown (cdp_detach) does the ring's part.
 */
static void cdp_dtr(struct dm_target *ti)
{
	struct cdp_dm *d = ti->private;

	if (d->c) {
		cdp_detach(d->c);
		cdp_put(d->c);	/* open files keep the ring until they close */
	}
	if (d->dev)
		dm_put_device(ti, d->dev);
	kfree(d);
}

/*
 * The table line: <device> <name> [options].  Fills in the context and
 * takes the device (cdp_dtr() puts it back).
 */
static int cdp_parse_args(struct dm_target *ti, struct cdp_dm *d,
			  unsigned int argc, char **argv)
{
	const char *err = NULL;
	unsigned int i;
	int r;

	if (argc < 2) {
		ti->error = "Usage: <device> <name> [ring_mb=N] [policy=block|overflow] [wait_ms=N] [device_id=HEX32]";
		return -EINVAL;
	}
	r = cdp_set_name(d->c, argv[1], &err);
	if (r) {
		ti->error = (char *)err;	/* char * on 6.1; a literal */
		return r;
	}
	if (ti->begin) {
		ti->error = "A cdp target must cover the whole table (start at sector 0)";
		return -EINVAL;
	}
	for (i = 2; i < argc; i++) {
		r = cdp_parse_opt(d->c, argv[i], &err);
		if (r) {
			ti->error = (char *)err;	/* char * on 6.1; a literal */
			return r;
		}
	}
	r = dm_get_device(ti, argv[0], dm_table_get_mode(ti->table), &d->dev);
	if (r) {
		ti->error = "Device lookup failed";
		return r;
	}
	return 0;
}

static int cdp_ctr(struct dm_target *ti, unsigned int argc, char **argv)
{
	const char *err = NULL;
	struct cdp_dm *d;
	int r;

	d = kzalloc(sizeof(*d), GFP_KERNEL);
	if (d)
		d->c = cdp_alloc_context();
	if (!d || !d->c) {
		kfree(d);
		ti->error = "Cannot allocate context";
		return -ENOMEM;
	}
	ti->private = d;
	r = cdp_parse_args(ti, d, argc, argv);
	if (r)
		goto bad;
	r = cdp_alloc_ring(d->c, (u64)ti->len << SECTOR_SHIFT,
			   bdev_logical_block_size(d->dev->bdev), &err);
	if (r) {
		ti->error = (char *)err;	/* char * on 6.1; a literal */
		goto bad;
	}
	/* one bio is one record: dm core splits at a quarter of the ring */
	r = dm_set_target_max_io_len(ti, cdp_max_io_bytes(d->c) >> SECTOR_SHIFT);
	if (r) {
		ti->error = "Cannot set max_io_len";
		goto bad;
	}
	r = cdp_register(d->c, &err);
	if (r) {
		ti->error = (char *)err;	/* char * on 6.1; a literal */
		goto bad;
	}
	ti->num_flush_bios = 1;
	ti->num_discard_bios = 1;
	ti->num_write_zeroes_bios = 1;
	ti->per_io_data_size = sizeof(struct cdp_per_bio);
	return 0;

bad:
	cdp_dtr(ti);
	return r;
}

static int cdp_map(struct dm_target *ti, struct bio *bio)
{
	struct cdp_dm *d = ti->private;
	struct cdp_per_bio *pb = dm_per_bio_data(bio, sizeof(struct cdp_per_bio));
	u64 offset = (u64)dm_target_offset(ti, bio->bi_iter.bi_sector) << SECTOR_SHIFT;

	cdp_io_init(pb);
	bio_set_dev(bio, d->dev->bdev);
	bio->bi_iter.bi_sector = offset >> SECTOR_SHIFT;
	cdp_io_submit(d->c, pb, bio, offset, true);	/* map may sleep */
	return DM_MAPIO_REMAPPED;
}

static int cdp_end_io(struct dm_target *ti, struct bio *bio, blk_status_t *error)
{
	struct cdp_dm *d = ti->private;

	cdp_io_done(d->c, dm_per_bio_data(bio, sizeof(struct cdp_per_bio)), *error);
	return DM_ENDIO_DONE;
}

static void cdp_status(struct dm_target *ti, status_type_t type,
		       unsigned int status_flags, char *result, unsigned int maxlen)
{
	struct cdp_dm *d = ti->private;
	unsigned int sz = 0;

	switch (type) {
	case STATUSTYPE_INFO:
		cdp_format_status(d->c, result, maxlen);
		break;
	case STATUSTYPE_TABLE:
		DMEMIT("%s %s ", d->dev->name, cdp_name(d->c));
		if (sz < maxlen)
			cdp_format_table(d->c, result + sz, maxlen - sz);
		break;
	default:
		if (maxlen)
			result[0] = '\0';
		break;
	}
}

/* "mark NAME": a MARK record, like the ioctl. */
static int cdp_message(struct dm_target *ti, unsigned int argc, char **argv,
		       char *result, unsigned int maxlen)
{
	struct cdp_dm *d = ti->private;
	size_t len;
	u64 seq, ts;
	int r;

	if (argc != 2 || strcasecmp(argv[0], "mark")) {
		DMWARN("%s: unsupported message (use: mark NAME)", cdp_name(d->c));
		return -EINVAL;
	}
	len = strlen(argv[1]);
	r = cdp_add_mark(d->c, argv[1], min_t(size_t, len, CDP_MAX_MARK_NAME + 1),
			 &seq, &ts);
	if (r == -EINVAL)	/* the name itself is never logged */
		DMWARN("%s: a mark name is 1 to 255 bytes of printable UTF-8",
		       cdp_name(d->c));
	else if (r == -ENOSPC)
		DMWARN("%s: no room in the ring for the mark", cdp_name(d->c));
	return r;
}

static int cdp_iterate_devices(struct dm_target *ti, iterate_devices_callout_fn fn,
			       void *data)
{
	struct cdp_dm *d = ti->private;

	return fn(ti, d->dev, 0, ti->len, data);
}

static struct target_type cdp_target = {
	.name		 = "cdp",
	.version	 = {1, 1, 0},
	.module		 = THIS_MODULE,
	.ctr		 = cdp_ctr,
	.dtr		 = cdp_dtr,
	.map		 = cdp_map,
	.end_io		 = cdp_end_io,
	.status		 = cdp_status,
	.message	 = cdp_message,
	.iterate_devices = cdp_iterate_devices,
};

int cdp_dm_init(void)
{
	return dm_register_target(&cdp_target);
}

void cdp_dm_exit(void)
{
	dm_unregister_target(&cdp_target);
}
