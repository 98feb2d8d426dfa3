/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * cdp_filter_abi.h - the control device of cdp's in-place device filter.
 *
 * /dev/cdpctl takes three ioctls, shaped after the blkfilter proposal
 * (attach, detach, ctl; one filter per block device, the device named by
 * its path): the day a mainline filter API exists, only the hook in
 * cdp-filter.c changes, not this.  Each needs CAP_SYS_ADMIN.
 *
 * The ring the filter feeds is the one the dm target feeds: /dev/cdp/<name>
 * with the ABI of cdp_ring_abi.h.  cdp/filterabi.py is the Python half;
 * tests/kernel/test_abi_header.py holds the two to each other.
 *
 * Errors (errno):
 *   ATTACH  EEXIST      the device already has a filter
 *           EBUSY       a partition of the disk, or the disk of the
 *                       partition, already has one
 *           EADDRINUSE  another ring (filter or dm target) has the name
 *           EOPNOTSUPP  a zoned device
 *           EINVAL      a bad name or option (the kernel log says which)
 *           ENOTBLK, ENOENT, ENXIO: the path is no block device
 *           EBUSY also when another module already hooks submit_bio_noacct
 *   DETACH  ENOENT      nothing attached under that name or device
 *   CTL     ENOENT      as DETACH; EINVAL for an unknown cmd
 * A hot-removed disk is detached by the module itself (its ring gets
 * DETACHED); rmmod is refused (EBUSY) while any filter is attached.
 */
#ifndef _UAPI_CDP_FILTER_ABI_H
#define _UAPI_CDP_FILTER_ABI_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define CDP_FILTER_CTL_PATH	"/dev/cdpctl"
#define CDP_FILTER_PATH_MAX	256
#define CDP_FILTER_NAME_MAX	32
#define CDP_FILTER_OPTS_MAX	256

/* ctl commands */
#define CDP_FILTER_CTL_STATUS	1	/* out: name, device, opts = the counters */

/*
 * One struct for the three ioctls.  device: the block device's path
 * (ATTACH; DETACH and CTL when name is empty), NUL-terminated.  name: the
 * ring's name, /dev/cdp/<name> (ATTACH; DETACH and CTL find the filter by
 * it when it is not empty).  opts: ATTACH's options, as in a dm table
 * (ring_mb=N policy=block|overflow wait_ms=N device_id=HEX32, separated
 * by spaces); CTL's answer.  On return from CTL, device holds the kernel's
 * name of the filtered device (e.g. "vda1") and name the ring's.
 */
struct cdp_filter_ioc {
	__u32 cmd;				/* CTL: CDP_FILTER_CTL_* */
	__u32 reserved;				/* 0 */
	char  device[CDP_FILTER_PATH_MAX];
	char  name[CDP_FILTER_NAME_MAX];
	char  opts[CDP_FILTER_OPTS_MAX];
};

#define CDP_FILTER_IOC_MAGIC	'C'
#define CDP_FILTER_IOC_ATTACH	_IOW(CDP_FILTER_IOC_MAGIC, 16, struct cdp_filter_ioc)
#define CDP_FILTER_IOC_DETACH	_IOW(CDP_FILTER_IOC_MAGIC, 17, struct cdp_filter_ioc)
#define CDP_FILTER_IOC_CTL	_IOWR(CDP_FILTER_IOC_MAGIC, 18, struct cdp_filter_ioc)

#endif /* _UAPI_CDP_FILTER_ABI_H */
