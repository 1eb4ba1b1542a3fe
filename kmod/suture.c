// SPDX-License-Identifier: GPL-2.0
/*
 * suture.ko: /dev/suture, the smallest helper Suture needs to patch the running kernel's text on a
 * kernel without /dev/kmem. It does two things and refuses everything else:
 *
 *   READ  copy bytes of kernel or module text to the caller;
 *   CAS   compare-and-swap up to 16 bytes of text under stop_machine, after checking that no task
 *         is stopped inside the range (Ksplice's check), through a temporary alias of the page
 *         (CR0.WP is never touched), then serialise every CPU.
 *
 * Root only: the node is 0600 and every open and ioctl checks CAP_SYS_ADMIN. Every write is logged.
 * The ABI lives in Sources/CShim/include/suture_kmod.h, shared with the Swift side.
 */
#define pr_fmt(fmt) "suture: " fmt

#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/kallsyms.h>
#include <linux/ktime.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/sched/signal.h>
#include <linux/sched/task_stack.h>
#include <linux/slab.h>
#include <linux/stop_machine.h>
#include <linux/uaccess.h>
#include <linux/vmalloc.h>
#include <asm/pgtable_types.h>
#include <asm/sync_core.h>
#include <asm/unwind.h>

#include "../Sources/CShim/include/suture_kmod.h"

/* Why an address is (not) text, for messages; KSYM_SYMBOL_LEN holds "name+0x1/0x2 [module]". */
struct text_check {
	char symbol[KSYM_SYMBOL_LEN];
};

static bool in_kernel_image(unsigned long addr)
{
	return addr >= __START_KERNEL_map && addr - __START_KERNEL_map < KERNEL_IMAGE_SIZE;
}

static bool in_module_area(unsigned long addr)
{
	return addr >= MODULES_VADDR && addr < MODULES_END;
}

/*
 * Text, for this module, is a present, read-only, executable mapping in the kernel image or the
 * module area that kallsyms names (BPF programs, also there, are refused). The exported helpers
 * cannot tell .text from .init.text, but init text is freed (unmapped) before anyone can call us.
 */
static int check_text(unsigned long addr, struct text_check *check, char *message)
{
	unsigned int level;
	pte_t *pte;

	if (!in_kernel_image(addr) && !in_module_area(addr)) {
		snprintf(message, SUTURE_KMOD_MESSAGE_SIZE, "0x%lx is outside the kernel image and the module area", addr);
		return -EFAULT;
	}
	pte = lookup_address(addr, &level);
	if (!pte || !pte_present(*pte)) {
		snprintf(message, SUTURE_KMOD_MESSAGE_SIZE, "0x%lx is not mapped", addr);
		return -EFAULT;
	}
	if (pte_write(*pte) || !pte_exec(*pte)) {
		snprintf(message, SUTURE_KMOD_MESSAGE_SIZE, "0x%lx is not text (mapping is %s, %s)", addr,
			 pte_write(*pte) ? "writable" : "read-only", pte_exec(*pte) ? "executable" : "not executable");
		return -EFAULT;
	}
	sprint_symbol(check->symbol, addr);
	if (strncmp(check->symbol, "0x", 2) == 0 || strncmp(check->symbol, "bpf_prog_", 9) == 0) {
		snprintf(message, SUTURE_KMOD_MESSAGE_SIZE, "0x%lx (%s) is not kernel or module text", addr, check->symbol);
		return -EFAULT;
	}
	return 0;
}

/* Checks the first and last byte and every page boundary in between. */
static int check_text_range(unsigned long addr, size_t length, struct text_check *check, char *message)
{
	unsigned long page;
	int err;

	if (addr + length < addr) {
		snprintf(message, SUTURE_KMOD_MESSAGE_SIZE, "0x%lx + %zu wraps around", addr, length);
		return -EFAULT;
	}
	for (page = (addr & PAGE_MASK) + PAGE_SIZE; page < addr + length; page += PAGE_SIZE) {
		err = check_text(page, check, message);
		if (err)
			return err;
	}
	err = check_text(addr + length - 1, check, message);
	if (err)
		return err;
	return check_text(addr, check, message);   /* last, so check->symbol names the start */
}

static long do_read(struct suture_kmod_read __user *uarg)
{
	struct suture_kmod_read *req;
	struct text_check *check;
	void *bounce = NULL;
	long err;

	req = kzalloc(sizeof(*req), GFP_KERNEL);
	check = kzalloc(sizeof(*check), GFP_KERNEL);
	if (!req || !check) {
		err = -ENOMEM;
		goto out;
	}
	if (copy_from_user(req, uarg, sizeof(*req))) {
		err = -EFAULT;
		goto out_free;
	}
	memset(req->message, 0, sizeof(req->message));
	if (req->reserved || req->length == 0 || req->length > SUTURE_KMOD_MAX_READ) {
		snprintf(req->message, sizeof(req->message), "read of %u bytes (1 to %d allowed)",
			 req->length, SUTURE_KMOD_MAX_READ);
		err = -EINVAL;
	} else {
		err = check_text_range(req->address, req->length, check, req->message);
		/* Through a heap copy: hardened usercopy refuses (oopses on) a copy_to_user from kernel text. */
		if (!err && !(bounce = kmalloc(req->length, GFP_KERNEL)))
			err = -ENOMEM;
		if (!err) {
			memcpy(bounce, (const void *)(unsigned long)req->address, req->length);
			if (copy_to_user(u64_to_user_ptr(req->buffer), bounce, req->length)) {
				snprintf(req->message, sizeof(req->message), "cannot copy to the caller's buffer");
				err = -EFAULT;
			}
		}
	}
	if (copy_to_user(uarg, req, sizeof(*req)))
		err = -EFAULT;
out_free:
out:
	kfree(bounce);
	kfree(check);
	kfree(req);
	return err;
}

/*
 * A task whose stack the pre-walk found clean. It is still clean inside stop_machine if it has not
 * been switched out since (every run ends in a switch that bumps nvcsw or nivcsw, and a task on a
 * CPU when the world stops is switched out by the stopper), so the walk under stop_machine only
 * unwinds tasks that ran in between: it shortens the time every CPU is held.
 */
struct clean_task {
	struct task_struct *task;
	pid_t pid;
	u64 start_time;
	unsigned long switches;
};

static unsigned long task_switches(struct task_struct *t)
{
	return READ_ONCE(t->nvcsw) + READ_ONCE(t->nivcsw);
}

/* One compare-and-swap, shared by every CPU inside stop_machine. */
struct cas_job {
	struct suture_kmod_cas *req;
	unsigned long addr;
	u8 *alias;                 /* writable alias of addr */
	atomic_t leader_claimed;
	atomic_t checked;          /* CPUs that have walked their own stack */
	atomic_t done;             /* set by the leader when the write (or refusal) is final */
	unsigned int cpus;
	int result;
	/* A CPU's own stack finding; the first one wins. */
	atomic_t busy_claimed;
	/* The pre-walk, before the world stops: tasks whose stacks were clean then. */
	struct clean_task *clean;
	unsigned int nclean;
};

static void note_busy(struct cas_job *job, struct task_struct *task, unsigned long address, int result)
{
	if (atomic_cmpxchg(&job->busy_claimed, 0, 1) != 0)
		return;
	job->req->busy_pid = task->pid;
	job->req->busy_address = address;
	strscpy(job->req->busy_comm, task->comm, sizeof(job->req->busy_comm));
	job->result = result;
}

/*
 * Walks one stack with the ORC unwinder. Busy when a return address (or an interrupted ip, which
 * the unwinder gives for pt_regs frames) lies in [addr, addr + length): that code would run again
 * after the write. An unwind that ends in error could hide such a frame, so it refuses too.
 */
static int stack_hit(struct cas_job *job, struct task_struct *task, unsigned long *where)
{
	unsigned long start = job->addr, end = job->addr + job->req->length;
	struct unwind_state state;
	unsigned long ra;

	for (unwind_start(&state, task, NULL, NULL); !unwind_done(&state); unwind_next_frame(&state)) {
		ra = unwind_get_return_address(&state);
		if (ra >= start && ra < end) {
			*where = ra;
			return -EBUSY;
		}
	}
	*where = 0;
	return unwind_error(&state) ? -EAGAIN : 0;
}

static void check_stack(struct cas_job *job, struct task_struct *task)
{
	unsigned long where;
	int hit = stack_hit(job, task, &where);

	if (hit)
		note_busy(job, task, where, hit);
}

/* The pre-walk's entry for `t`, when it still vouches for it. `cursor` follows the task list's order. */
static bool still_clean(struct cas_job *job, struct task_struct *t, unsigned int *cursor)
{
	unsigned int i;

	/* Tasks keep their relative order; new ones are appended, exited ones vanish: look a little ahead. */
	for (i = *cursor; i < job->nclean && i < *cursor + 8; i++) {
		struct clean_task *c = &job->clean[i];

		if (c->task == t && c->pid == t->pid && c->start_time == t->start_time) {
			*cursor = i + 1;
			return c->switches == task_switches(t);
		}
	}
	return false;
}

/*
 * Before stop_machine, with RCU: unwind every task not on a CPU and remember the clean ones with
 * their switch count, read before the unwind (a task that runs during it is re-walked later).
 */
static void prewalk(struct cas_job *job)
{
	struct task_struct *g, *t;
	unsigned int capacity = 0, n = 0;
	unsigned long where;

	rcu_read_lock();
	for_each_process_thread(g, t)
		capacity++;
	rcu_read_unlock();
	capacity += 64;
	job->clean = kvmalloc_array(capacity, sizeof(*job->clean), GFP_KERNEL);
	if (!job->clean)
		return;   /* then every task is walked inside stop_machine */
	rcu_read_lock();
	for_each_process_thread(g, t) {
		unsigned long switches;

		if (n == capacity)
			break;
		switches = task_switches(t);
		smp_rmb();
		if (READ_ONCE(t->on_cpu) || !task_stack_page(t) || refcount_read(&t->stack_refcount) == 0)
			continue;
		if (stack_hit(job, t, &where))
			continue;
		job->clean[n++] = (struct clean_task){ t, t->pid, t->start_time, switches };
	}
	rcu_read_unlock();
	job->nclean = n;
}

/*
 * Tasks not on a CPU: their saved frames. Tasks on a CPU are the stopper threads, each checked by
 * its own CPU. Stacks already freed (refcount 0) belong to dead tasks that will never run again.
 */
static void check_every_task(struct cas_job *job)
{
	struct task_struct *g, *t;
	unsigned int cursor = 0;

	rcu_read_lock();
	if (!READ_ONCE(init_task.on_cpu))
		check_stack(job, &init_task);
	for_each_process_thread(g, t) {
		if (atomic_read(&job->busy_claimed))
			break;
		if (READ_ONCE(t->on_cpu) || !task_stack_page(t) || refcount_read(&t->stack_refcount) == 0)
			continue;
		if (still_clean(job, t, &cursor)) {
			job->req->tasks_vouched++;
			continue;
		}
		job->req->tasks_walked++;
		check_stack(job, t);
	}
	rcu_read_unlock();
}

static int cas_on_each_cpu(void *data)
{
	struct cas_job *job = data;
	struct suture_kmod_cas *req = job->req;
	bool leader = atomic_cmpxchg(&job->leader_claimed, 0, 1) == 0;
	ktime_t t0, t1;

	/* Every CPU's current frame first: the stopper thread's own stack. */
	check_stack(job, current);
	atomic_inc(&job->checked);

	if (!leader) {
		while (!atomic_read(&job->done))
			cpu_relax();
		sync_core();
		return 0;
	}

	t0 = ktime_get();
	while (atomic_read(&job->checked) < job->cpus)
		cpu_relax();
	if (!atomic_read(&job->busy_claimed))
		check_every_task(job);
	t1 = ktime_get();
	req->walk_ns = ktime_to_ns(ktime_sub(t1, t0));

	memcpy(req->found, (const void *)job->addr, req->length);
	if (atomic_read(&job->busy_claimed)) {
		/* job->result set by note_busy */
	} else if (memcmp(req->found, req->expected, req->length) != 0) {
		job->result = -EILSEQ;
	} else {
		memcpy(job->alias, req->replacement, req->length);
		/* Read back through the address the CPUs execute, not through the alias. */
		memcpy(req->found, (const void *)job->addr, req->length);
		job->result = memcmp(req->found, req->replacement, req->length) ? -EIO : 0;
	}
	sync_core();
	req->stopped_ns = ktime_to_ns(ktime_sub(ktime_get(), t0));
	atomic_set(&job->done, 1);
	return 0;
}

static struct page *text_page(unsigned long addr)
{
	if (in_module_area(addr))
		return vmalloc_to_page((const void *)addr);
	return pfn_to_page(__pa_symbol(addr) >> PAGE_SHIFT);
}

static void sync_core_ipi(void *unused)
{
	sync_core();
}

static void hex_bytes(char *out, size_t size, const u8 *bytes, u32 length)
{
	u32 i;
	size_t used = 0;

	out[0] = 0;
	for (i = 0; i < length && used + 4 < size; i++)
		used += scnprintf(out + used, size - used, i ? " %02x" : "%02x", bytes[i]);
}

static long do_cas(struct suture_kmod_cas __user *uarg)
{
	struct suture_kmod_cas *req;
	struct text_check *check;
	struct cas_job job = { };
	struct page *pages[2];
	unsigned int npages;
	unsigned long offset;
	void *alias = NULL;
	char expected[3 * SUTURE_KMOD_MAX_WRITE + 1], found[3 * SUTURE_KMOD_MAX_WRITE + 1];
	char replacement[3 * SUTURE_KMOD_MAX_WRITE + 1];
	ktime_t t0;
	long err;

	req = kzalloc(sizeof(*req), GFP_KERNEL);
	check = kzalloc(sizeof(*check), GFP_KERNEL);
	if (!req || !check) {
		err = -ENOMEM;
		goto out;
	}
	if (copy_from_user(req, uarg, sizeof(*req))) {
		err = -EFAULT;
		goto out;
	}
	/* Outputs start clean whatever the caller left in them. */
	memset(req->found, 0, sizeof(req->found));
	req->stop_machine_ns = req->stopped_ns = req->walk_ns = 0;
	req->tasks_walked = req->tasks_vouched = 0;
	req->reserved_out = 0;
	req->busy_pid = -1;
	req->busy_address = 0;
	memset(req->busy_comm, 0, sizeof(req->busy_comm));
	memset(req->message, 0, sizeof(req->message));

	if (req->flags || req->length == 0 || req->length > SUTURE_KMOD_MAX_WRITE) {
		snprintf(req->message, sizeof(req->message), "write of %u bytes with flags 0x%x (1 to %d bytes, no flags)",
			 req->length, req->flags, SUTURE_KMOD_MAX_WRITE);
		err = -EINVAL;
		goto reply;
	}
	err = check_text_range(req->address, req->length, check, req->message);
	if (err)
		goto reply;

	/* vmap can sleep: map the alias before the world stops. Two pages when the range crosses. */
	offset = offset_in_page(req->address);
	npages = offset + req->length > PAGE_SIZE ? 2 : 1;
	pages[0] = text_page(req->address);
	if (npages == 2)
		pages[1] = text_page((req->address & PAGE_MASK) + PAGE_SIZE);
	if (!pages[0] || (npages == 2 && !pages[1])) {
		snprintf(req->message, sizeof(req->message), "no page behind 0x%llx", req->address);
		err = -EFAULT;
		goto reply;
	}
	alias = vmap(pages, npages, VM_MAP, PAGE_KERNEL);
	if (!alias) {
		snprintf(req->message, sizeof(req->message), "cannot map a writable alias of 0x%llx", req->address);
		err = -ENOMEM;
		goto reply;
	}

	job.req = req;
	job.addr = req->address;
	job.alias = (u8 *)alias + offset;
	job.cpus = num_online_cpus();
	prewalk(&job);
	t0 = ktime_get();
	/* cpus_read_lock is taken by stop_machine itself; num_online_cpus can only change before it. */
	err = stop_machine(cas_on_each_cpu, &job, cpu_online_mask);
	req->stop_machine_ns = ktime_to_ns(ktime_sub(ktime_get(), t0));
	kvfree(job.clean);
	vunmap(alias);
	/* Flush the alias from every CPU's TLB now, not lazily: no writable mapping may linger. */
	vm_unmap_aliases();
	on_each_cpu(sync_core_ipi, NULL, 1);
	if (!err)
		err = job.result;

	hex_bytes(expected, sizeof(expected), req->expected, req->length);
	hex_bytes(found, sizeof(found), req->found, req->length);
	hex_bytes(replacement, sizeof(replacement), req->replacement, req->length);
	switch (err) {
	case 0:
		snprintf(req->message, sizeof(req->message), "%s: %s -> %s", check->symbol, expected, replacement);
		pr_info("pid %d (%s) wrote %u byte(s) at 0x%llx %s: %s -> %s (stop_machine %llu us, %u tasks walked, %u vouched for)\n",
			task_pid_nr(current), current->comm, req->length, req->address, check->symbol,
			expected, replacement, req->stop_machine_ns / 1000, req->tasks_walked, req->tasks_vouched);
		break;
	case -EILSEQ:
		snprintf(req->message, sizeof(req->message), "%s: expected %s, found %s", check->symbol, expected, found);
		break;
	case -EBUSY:
		snprintf(req->message, sizeof(req->message), "%s: task %s (pid %d) has 0x%llx on its stack",
			 check->symbol, req->busy_comm, req->busy_pid, req->busy_address);
		break;
	case -EAGAIN:
		snprintf(req->message, sizeof(req->message), "%s: the stack of task %s (pid %d) could not be unwound",
			 check->symbol, req->busy_comm, req->busy_pid);
		break;
	case -EIO:
		snprintf(req->message, sizeof(req->message), "%s: wrote %s but read back %s", check->symbol,
			 replacement, found);
		pr_err("pid %d: write at 0x%llx %s read back %s, not %s\n", task_pid_nr(current), req->address,
		       check->symbol, found, replacement);
		break;
	default:
		snprintf(req->message, sizeof(req->message), "%s: stop_machine failed (%ld)", check->symbol, err);
	}
	if (err && err != -EIO)
		pr_info("pid %d (%s) refused write at 0x%llx: %s\n", task_pid_nr(current), current->comm,
			req->address, req->message);
reply:
	if (copy_to_user(uarg, req, sizeof(*req)))
		err = -EFAULT;
out:
	kfree(check);
	kfree(req);
	return err;
}

static int suture_open(struct inode *inode, struct file *file)
{
	return capable(CAP_SYS_ADMIN) ? 0 : -EPERM;
}

static long suture_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	if (!capable(CAP_SYS_ADMIN))
		return -EPERM;
	switch (cmd) {
	case SUTURE_IOC_VERSION:
		return SUTURE_KMOD_ABI_VERSION;
	case SUTURE_IOC_READ:
		return do_read((struct suture_kmod_read __user *)arg);
	case SUTURE_IOC_CAS:
		return do_cas((struct suture_kmod_cas __user *)arg);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations suture_fops = {
	.owner = THIS_MODULE,
	.open = suture_open,
	.unlocked_ioctl = suture_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice suture_device = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "suture",
	.fops = &suture_fops,
	.mode = 0600,
};

static int __init suture_init(void)
{
	int err = misc_register(&suture_device);

	if (!err)
		pr_info("loaded: /dev/suture (ABI %d)\n", SUTURE_KMOD_ABI_VERSION);
	return err;
}

static void __exit suture_exit(void)
{
	misc_deregister(&suture_device);
	pr_info("unloaded; patches already written stay in place\n");
}

module_init(suture_init);
module_exit(suture_exit);
MODULE_LICENSE("GPL");
MODULE_AUTHOR("Suture");
MODULE_DESCRIPTION("Compare-and-swap writes to kernel text for Suture, under stop_machine");
