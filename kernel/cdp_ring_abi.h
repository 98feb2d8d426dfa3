/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * cdp_ring_abi.h - the write ring of dm-cdp, ABI version 1.
 *
 * The contract between the producer (the dm-cdp target, or a userspace
 * producer such as cdp's simulator) and the service that drains the ring
 * into a journal.  cdp/ringabi.py is the Python half; tests/kernel/
 * test_abi_header.py holds the two to the same sizes, offsets and values.
 * docs/ring-abi.md explains it at length: the life of a record, ordering,
 * the consumer's checks, OVERFLOW, DETACHED and the ioctls.
 *
 * Layout (the target's character device /dev/cdp/<name>, or a ring file):
 *
 *     [ control page: 4096 bytes ][ data area: data_size bytes ]
 *
 * mmap offset 0, length 4096: the control page, read/write (the consumer
 * writes tail and nothing else).  mmap offset 4096, length data_size: the
 * data area, read only.  poll() reports POLLIN while committed records wait.
 *
 * Everything is little-endian; positions and lengths are bytes.  head and
 * tail grow forever; position p lives at data offset p & (data_size - 1).
 *
 * A record starts at a multiple of 64: a 64-byte header, data_len bytes of
 * payload, zero padding up to rec_len.  The producer writes the header with
 * state BUSY, publishes head, copies the payload, and at last stores state
 * COMMITTED (or DISCARDED) with release semantics.  hdr_crc covers header
 * bytes 0..51, so the state flip never touches it.  data_crc and hdr_crc are
 * final only once state is not BUSY: the producer may fill them in after the
 * copy (dm-cdp computes a WRITE's CRC once its bio completed), so a consumer
 * loads state first, stops at BUSY, and only then reads and checks the rest.
 *
 * device_id identifies the protected device, so that a consumer can refuse
 * a ring of another device of the same size.  dm-cdp copies it from the
 * table's device_id=<32 hex digits> argument, which userspace derives from
 * a stable identity of the device; zeros when the table has none.
 */
#ifndef _UAPI_CDP_RING_ABI_H
#define _UAPI_CDP_RING_ABI_H

#include <linux/types.h>
#include <linux/ioctl.h>

#define CDP_RING_VERSION	1
#define CDP_RING_MAGIC		0x47525043U	/* "CPRG" as a little-endian u32 */
#define CDP_REC_MAGIC		0x52504443U	/* "CDPR" as a little-endian u32 */
#define CDP_CONTROL_SIZE	4096
#define CDP_MIN_DATA_SIZE	65536
#define CDP_REC_HDR_SIZE	64
#define CDP_REC_ALIGN		64
#define CDP_HDR_CRC_SPAN	52	/* hdr_crc covers header bytes 0..51 */
#define CDP_MAX_MARK_NAME	255
#define CDP_OVERFLOW_PAYLOAD	8	/* u64 ts_ns of the first dropped write */
#define CDP_SECTOR		512

/* control page flags */
#define CDP_RING_F_OVERFLOW	(1U << 0)	/* records are being dropped */
#define CDP_RING_F_DETACHED	(1U << 1)	/* producer gone: nothing follows head */

/* record types */
#define CDP_REC_WRITE		1	/* payload: the data written */
#define CDP_REC_DISCARD		2	/* no payload; restore writes zeros */
#define CDP_REC_WRITE_ZEROES	3	/* no payload; the range reads as zeros */
#define CDP_REC_FLUSH		4	/* a cache flush completed: crash-consistent point */
#define CDP_REC_MARK		5	/* payload: printable UTF-8 name, 1..255 bytes */
#define CDP_REC_OVERFLOW	6	/* payload: u64 ts_ns of the first dropped write */
#define CDP_REC_PAD		7	/* filler up to the end of the data area */

/* record flags */
#define CDP_RECF_FUA		(1U << 0)
#define CDP_RECF_PREFLUSH	(1U << 1)

/* record states */
#define CDP_STATE_BUSY		0
#define CDP_STATE_COMMITTED	1
#define CDP_STATE_DISCARDED	2

/* The control page: 4096 bytes at mmap offset 0. */
struct cdp_ring_ctl {
	__le32 magic;		/* CDP_RING_MAGIC */
	__le32 version;		/* CDP_RING_VERSION */
	__le64 data_size;	/* power of two, >= CDP_MIN_DATA_SIZE */
	__le64 device_bytes;	/* size of the protected device */
	__le32 block_size;	/* logical block size of the device */
	__le32 flags;		/* CDP_RING_F_* */
	__u8   device_id[16];	/* the protected device's id, or zeros */
	__le64 dropped;		/* writes not journaled because the ring was full */
	__le64 reserved0;
	__le64 head;		/* producer position (bytes ever reserved) */
	__le64 reserved1[7];
	__le64 tail;		/* consumer position (bytes ever released) */
	__u8   reserved2[3960];
};

/* A record header: 64 bytes at a multiple of 64 in the data area. */
struct cdp_rec_hdr {
	__le32 magic;		/* CDP_REC_MAGIC */
	__le16 type;		/* CDP_REC_* */
	__le16 flags;		/* CDP_RECF_* */
	__le32 rec_len;		/* header + payload + padding, multiple of 64 */
	__le32 data_len;	/* payload bytes */
	__le64 seq;		/* 1, 2, 3, ... in ring order; 0 for PAD */
	__le64 ts_ns;		/* CLOCK_REALTIME at submission, never decreasing */
	__le64 offset;		/* byte offset on the device */
	__le64 length;		/* bytes of the device affected */
	__le32 data_crc;	/* CRC-32C of the payload, 0 when data_len is 0 */
	__le32 hdr_crc;		/* CRC-32C of bytes 0..51 */
	__le32 state;		/* CDP_STATE_* */
	__le32 reserved;
};

/*
 * CDP_IOC_MARK: add a MARK record, ordered exactly among the writes.  Needs
 * a descriptor opened for writing (O_WRONLY or O_RDWR) or CAP_SYS_ADMIN:
 * EBADF otherwise, as write(2) on a read-only descriptor.  EINVAL for a
 * name that is not printable UTF-8: well-formed, without C0 or C1 controls
 * or DEL (so without escape sequences).
 */
struct cdp_ioc_mark {
	__u64 seq;		/* out: the MARK record's seq */
	__u64 ts_ns;		/* out: its timestamp */
	__u32 name_len;		/* in: bytes of name, 1..255 */
	__u32 reserved;		/* in: 0 */
	__u8  name[256];	/* in: printable UTF-8, no NUL needed */
};

/* policies reported by CDP_IOC_INFO */
#define CDP_POLICY_BLOCK	0	/* wait up to wait_ms for room, then overflow */
#define CDP_POLICY_OVERFLOW	1	/* drop at once and track the ranges */

/* CDP_IOC_INFO: the target's sizes, settings and counters. */
struct cdp_ioc_info {
	__u32 version;		/* CDP_RING_VERSION */
	__u32 policy;		/* CDP_POLICY_* */
	__u64 device_bytes;	/* size of the protected device */
	__u64 data_size;	/* bytes of the data area */
	__u32 block_size;	/* logical block size */
	__u32 wait_ms;		/* policy=block: longest wait for room */
	__u64 records;		/* records reserved (every type but PAD) */
	__u64 write_bytes;	/* payload bytes of WRITE records */
	__u64 dropped;		/* writes dropped while the ring was full */
	__u64 overflow_records;	/* OVERFLOW records emitted */
	__u64 committed;	/* records committed */
	__u64 discarded;	/* records discarded (the device failed the write) */
	__u64 head;		/* producer position */
	__u64 tail;		/* last valid consumer position seen */
	__u64 last_seq;		/* seq of the newest record */
	__u32 flags;		/* CDP_RING_F_* */
	__u32 reserved;
	__u8  name[64];		/* the target's name, NUL-terminated */
};

#define CDP_IOC_MAGIC	'C'
#define CDP_IOC_MARK	_IOWR(CDP_IOC_MAGIC, 1, struct cdp_ioc_mark)
#define CDP_IOC_INFO	_IOR(CDP_IOC_MAGIC, 2, struct cdp_ioc_info)

#endif /* _UAPI_CDP_RING_ABI_H */
