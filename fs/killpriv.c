/*
 * killpriv.c - tierfs clears the set-user-ID and set-group-ID bits itself
 * (FUSE_HANDLE_KILLPRIV_V2), so that the kernel stops asking for
 * security.capability before writes and truncations.
 *
 * Without it, the kernel sends GETXATTR security.capability before the
 * first write to an inode after each open and before each O_TRUNC open: a
 * round trip each, answered ENOTSUP (tierfs keeps no security.* names). With
 * FUSE_HANDLE_KILLPRIV_V2 the kernel marks the superblock SB_NOSEC: once an
 * inode's write found no capability and no set-ID bit, the inode is S_NOSEC
 * and later writes and truncations of it ask nothing. An overwrite (open
 * O_TRUNC, write, close) then costs 4 round trips instead of 6.
 *
 * Only until the kernel next takes the inode's attributes from tierfs: it
 * clears S_NOSEC on every attribute refresh (a GETATTR, LOOKUP, CREATE or
 * READDIRPLUS reply), as another client may have set a bit or a capability.
 * Only a write sets it again; an O_TRUNC open does not. So an overwrite
 * after a stat that had to ask (the kernel invalidates size and mtime after
 * each write) or an `ls -l` still asks twice, once for the truncation and
 * once for the write; a plain O_TRUNC open asks every time until a write.
 * No answer tierfs can give stops that but ENOSYS, which turns off every
 * getxattr of the mount (user.* and user.tierfs.* included).
 *
 * libfuse 3.14 neither offers the flag nor passes on the per-request "kill"
 * flags the kernel then sends, so the session's I/O goes through the two
 * functions here (fuse_session_custom_io, the same read(2) and writev(2) on
 * the same descriptors):
 *  - reading: the FUSE_INIT request says whether the kernel offers the
 *    flag; a WRITE, SETATTR or OPEN says whether the kernel asks to clear
 *    the bits (the caller lacks CAP_FSETID, or a chown). That answer
 *    is kept for the request just read by this thread (libfuse handles a
 *    request on the thread that read it), as tfs_kill_suidgid().
 *  - writing: the reply to FUSE_INIT gets FUSE_HANDLE_KILLPRIV_V2 when the
 *    kernel offered it.
 * The operations (ops.c) then clear S_ISUID, and S_ISGID when the group may
 * execute, as the kernel would have (eng_setattr's kill_suidgid). tierfs
 * stores no security.capability, so there is none to remove. Not done: a
 * CREATE with O_TRUNC that opens a file another mount made meanwhile (the
 * kernel had the name as absent) keeps that file's set-ID bits.
 */
#include <errno.h>
#include <linux/fuse.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "killpriv.h"

/* The unique of the FUSE_INIT request, 0 before it came; whether the
 * kernel offered FUSE_HANDLE_KILLPRIV_V2 in it. */
static _Atomic uint64_t init_unique;
static atomic_bool init_offered;
static _Thread_local bool kill_req;

bool tfs_kill_suidgid(void)
{
	return kill_req;
}

/* Copies the u32 at @off of the request's argument (after its header) to
 * *v; false when the request is too short to hold it. */
static bool arg_u32(const char *buf, size_t len, size_t off, uint32_t *v)
{
	size_t at = sizeof(struct fuse_in_header) + off;

	if (len < at + sizeof(*v))
		return false;
	memcpy(v, buf + at, sizeof(*v));
	return true;
}

static ssize_t kp_read(int fd, void *buf, size_t len, void *userdata)
{
	ssize_t r = read(fd, buf, len);
	struct fuse_in_header h;
	uint32_t v = 0;

	(void)userdata;
	kill_req = false;
	if (r < (ssize_t)sizeof(h))
		return r;
	memcpy(&h, buf, sizeof(h));
	switch (h.opcode) {
	case FUSE_INIT:
		if (arg_u32(buf, (size_t)r, offsetof(struct fuse_init_in, flags),
			    &v)) {
			atomic_store(&init_offered,
				     (v & FUSE_HANDLE_KILLPRIV_V2) != 0);
			atomic_store(&init_unique, h.unique);
		}
		break;
	case FUSE_WRITE:
		kill_req = arg_u32(buf, (size_t)r,
				   offsetof(struct fuse_write_in, write_flags),
				   &v) &&
			   (v & FUSE_WRITE_KILL_SUIDGID);
		break;
	case FUSE_SETATTR:
		kill_req = arg_u32(buf, (size_t)r,
				   offsetof(struct fuse_setattr_in, valid), &v) &&
			   (v & FATTR_KILL_SUIDGID);
		break;
	case FUSE_OPEN:
		kill_req = arg_u32(buf, (size_t)r,
				   offsetof(struct fuse_open_in, open_flags),
				   &v) &&
			   (v & FUSE_OPEN_KILL_SUIDGID);
		break;
	default:
		break;
	}
	return r;
}

static ssize_t kp_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	uint64_t unique = atomic_load(&init_unique);
	struct fuse_out_header h;

	(void)userdata;
	if (unique && count >= 2 && iov[0].iov_len >= sizeof(h) &&
	    iov[1].iov_len >= offsetof(struct fuse_init_out, flags) +
				      sizeof(uint32_t)) {
		memcpy(&h, iov[0].iov_base, sizeof(h));
		if (h.unique == unique && h.error == 0 &&
		    atomic_exchange(&init_unique, 0) == unique &&
		    atomic_load(&init_offered)) {
			char *flags = (char *)iov[1].iov_base +
				      offsetof(struct fuse_init_out, flags);
			uint32_t f;

			memcpy(&f, flags, sizeof(f));
			f |= FUSE_HANDLE_KILLPRIV_V2;
			memcpy(flags, &f, sizeof(f));
		}
	}
	return writev(fd, iov, count);
}

int tfs_killpriv_setup(struct fuse_session *se)
{
	static const struct fuse_custom_io io = {
		.read = kp_read,
		.writev = kp_writev,
	};

	return fuse_session_custom_io(se, &io, fuse_session_fd(se));
}
