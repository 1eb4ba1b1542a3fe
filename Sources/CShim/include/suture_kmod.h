/* The ioctl ABI of /dev/suture, shared by the kernel module (kmod/suture.c includes this file by a
 * relative path) and Suture (Targets.LocalKernelTarget, through the CShim module). One header, so
 * the two sides cannot drift apart: change a struct here and both are rebuilt against it. */
#ifndef SUTURE_KMOD_H
#define SUTURE_KMOD_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/ioctl.h>
#else
#include <stdint.h>
#include <sys/ioctl.h>
typedef uint8_t __u8;
typedef uint32_t __u32;
typedef int32_t __s32;
typedef uint64_t __u64;
#endif

/* The largest compare-and-swap: enough for any x86 instruction (15 bytes) and a 16-byte store. */
#define SUTURE_KMOD_MAX_WRITE 16
/* The largest read per call: a page, so one call checks at most two pages' mappings. */
#define SUTURE_KMOD_MAX_READ 4096
#define SUTURE_KMOD_MESSAGE_SIZE 160
#define SUTURE_KMOD_ABI_VERSION 1

/* SUTURE_IOC_READ: copy `length` bytes of kernel or module text at `address` to `buffer`.
 * Refused (EFAULT) when any byte is outside a present, read-only, executable mapping of the kernel
 * image or the module area that resolves to a symbol; `message` says why. */
struct suture_kmod_read {
	__u64 address;
	__u64 buffer;          /* user pointer */
	__u32 length;
	__u32 reserved;        /* must be 0 */
	char message[SUTURE_KMOD_MESSAGE_SIZE];
};

/* SUTURE_IOC_CAS: under stop_machine, if the `length` bytes at `address` equal `expected`, write
 * `replacement` through a temporary alias of the page(s), read it back and serialise every CPU.
 * Errors (the struct is copied back in every case, so `message` and the timings are valid):
 *   EILSEQ  the bytes differ from `expected` (`found` holds them), nothing written;
 *   EBUSY   a task's saved return address or a CPU's current frame lies in the range
 *           (`busy_pid`, `busy_comm`, `busy_address` name it), nothing written;
 *   EAGAIN  a stack could not be unwound, nothing written;
 *   EFAULT  the range is not kernel or module text; EINVAL bad length or flags;
 *   EIO     the read-back differs from `replacement` (should never happen). */
struct suture_kmod_cas {
	__u64 address;
	__u32 length;          /* 1 ... SUTURE_KMOD_MAX_WRITE */
	__u32 flags;           /* must be 0 */
	__u8 expected[SUTURE_KMOD_MAX_WRITE];
	__u8 replacement[SUTURE_KMOD_MAX_WRITE];
	/* out */
	__u8 found[SUTURE_KMOD_MAX_WRITE];
	__u64 stop_machine_ns; /* the whole stop_machine() call */
	__u64 stopped_ns;      /* the leader's section while every CPU is held */
	__u64 walk_ns;         /* of which the stack walk of every task */
	__u32 tasks_walked;    /* stacks unwound while every CPU was held */
	__s32 busy_pid;        /* -1 when none */
	__u64 busy_address;
	char busy_comm[16];
	char message[SUTURE_KMOD_MESSAGE_SIZE];
	/* Stacks unwound before the world stopped whose tasks have not run since: not walked again. */
	__u32 tasks_vouched;
	__u32 reserved_out;
};

/* SUTURE_IOC_VERSION: returns SUTURE_KMOD_ABI_VERSION (the ioctl's return value). */
#define SUTURE_IOC_MAGIC 0xB7
#define SUTURE_IOC_VERSION _IO(SUTURE_IOC_MAGIC, 0)
#define SUTURE_IOC_READ _IOWR(SUTURE_IOC_MAGIC, 1, struct suture_kmod_read)
#define SUTURE_IOC_CAS _IOWR(SUTURE_IOC_MAGIC, 2, struct suture_kmod_cas)

#ifndef __KERNEL__
/* For Swift, which imports neither function-like macros nor variadic ioctl(2). */
static inline unsigned long suture_kmod_ioc_version(void) { return SUTURE_IOC_VERSION; }
static inline unsigned long suture_kmod_ioc_read(void) { return SUTURE_IOC_READ; }
static inline unsigned long suture_kmod_ioc_cas(void) { return SUTURE_IOC_CAS; }
/* ioctl(2) with one pointer argument; -1 and errno on failure. */
static inline int suture_kmod_ioctl(int fd, unsigned long request, void *argument)
{
	return ioctl(fd, request, argument);
}
#endif

#endif
