/*
 * main.c - the tierfs program: parses the command line, opens the engine,
 * mounts, serves FUSE requests until unmounted or signalled, then closes
 * the engine, which persists every pending change before the process exits.
 *
 * In the background the program forks before it opens the engine (whose
 * threads would not survive a fork), and not with fuse_daemonize(): the
 * child opens the engine once, mounts, and only then tells the waiting
 * parent through a pipe that the mount is up and leaves the terminal. So
 * a store that cannot be opened is reported on the terminal and the
 * command's exit status says whether the mount is there.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <sys/wait.h>
#include <unistd.h>

#include "control.h"
#include "hash_cmd.h"
#include "inval.h"
#include "items_cmd.h"
#include "killpriv.h"
#include "ops.h"
#include "options.h"
#include "status_cmd.h"
#include "verify_cmd.h"

static int log_to_syslog;
static int log_debug;

static void log_sink(void *arg, int level, const char *msg)
{
	if (level == LOG_DEBUG && !log_debug)
		return;
	if (log_to_syslog)
		syslog(level, "%s", msg);
	else
		fprintf(stderr, "tierfs: %s\n", msg);
}

static int open_engine(struct tfs_options *o, struct eng **e)
{
	int r = eng_open(&o->eng, e);

	if (r < 0)
		fprintf(stderr, "tierfs: cannot mount: %s (see above)\n",
			strerror(-r));
	return r;
}

/*
 * Forks; the parent waits for the child's verdict (one byte: its exit
 * status) and exits with it, or with 1 when the child died first. Returns
 * 0 in the child, with *notify_fd the pipe to write the verdict to.
 */
static int daemon_fork(int *notify_fd)
{
	int fds[2], status;
	unsigned char verdict;
	ssize_t n;
	pid_t pid;

	if (pipe2(fds, O_CLOEXEC) < 0) {
		perror("tierfs: pipe");
		return -1;
	}
	pid = fork();
	if (pid < 0) {
		perror("tierfs: fork");
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid > 0) {
		close(fds[1]);
		do
			n = read(fds[0], &verdict, 1);
		while (n < 0 && errno == EINTR);
		if (n == 1)
			_exit(verdict);
		waitpid(pid, &status, 0);
		_exit(1);
	}
	close(fds[0]);
	if (setsid() < 0)
		perror("tierfs: setsid");
	*notify_fd = fds[1];
	return 0;
}

/* Tells the waiting parent the verdict @status; with 0 the daemon leaves
 * the terminal (stdio on /dev/null, working directory /). */
static void daemon_ready(int *notify_fd, int status)
{
	unsigned char verdict = (unsigned char)status;
	int fd;

	if (*notify_fd < 0)
		return;
	if (status == 0) {
		if (chdir("/") < 0)
			perror("tierfs: chdir /");
		fd = open("/dev/null", O_RDWR | O_CLOEXEC);
		if (fd >= 0) {
			dup2(fd, STDIN_FILENO);
			dup2(fd, STDOUT_FILENO);
			dup2(fd, STDERR_FILENO);
			if (fd > STDERR_FILENO)
				close(fd);
		}
	}
	/* a parent that went away cannot be told: nothing to do then */
	if (write(*notify_fd, &verdict, 1) != 1)
		perror("tierfs: cannot report to the waiting parent");
	close(*notify_fd);
	*notify_fd = -1;
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts cmd = {0};
	struct fuse_loop_config *loop;
	struct tfs_options o;
	struct tfs t = {0};
	int r, ret = 1, notify_fd = -1;

	if (argc >= 2 && strcmp(argv[1], "status") == 0)
		return tfs_status_cmd(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "hash") == 0)
		return tfs_hash_cmd(argc, argv);
	if (argc >= 2 && strcmp(argv[1], "verify") == 0)
		return tfs_verify_cmd(argc, argv);
	if (argc >= 2 && tfs_items_cmd_is(argv[1]))
		return tfs_items_cmd(argc, argv);
	if (tfs_options_parse(&args, &o) < 0) {
		ret = 2;
		goto out_free_args;
	}
	/* parsing copied every option: hide passwords from ps now */
	for (int i = 1; i < argc; i++)
		tfs_mask_secrets(argv[i]);
	if (fuse_parse_cmdline(&args, &cmd) != 0) {
		ret = 2;
		goto out_free_opts;
	}
	if (o.show_help || cmd.show_help) {
		tfs_usage(argv[0]);
		ret = 0;
		goto out_free_opts;
	}
	if (cmd.show_version) {
		printf("tierfs 0.1.0\n");
		fuse_lowlevel_version();
		ret = 0;
		goto out_free_opts;
	}
	if (!cmd.mountpoint) {
		fprintf(stderr, "tierfs: no mountpoint (see %s --help)\n",
			argv[0]);
		ret = 2;
		goto out_free_opts;
	}
	log_debug = cmd.debug;
	o.eng.log.fn = log_sink;
	t.entry_timeout = o.entry_timeout;
	tfs_handles_init(&t.handles);
	t.attr_timeout = o.attr_timeout;
	t.read_only = o.read_only;
	tfs_cursors_init(&t.cursors);
	pthread_mutex_init(&t.ctl_lock, NULL);

	pthread_mutex_init(&t.inval_lock, NULL);
	o.eng.inval = tfs_inval;
	o.eng.inval_arg = &t;

	if (!cmd.foreground && daemon_fork(&notify_fd) < 0)
		goto out_free_opts;
	if (open_engine(&o, &t.eng) < 0)
		goto out_free_opts;
	if (fuse_opt_add_arg(&args, "-odefault_permissions,noatime,"
				    "subtype=tierfs,fsname=tierfs") != 0)
		goto out_close;
	t.se = fuse_session_new(&args, &tfs_ops, sizeof(tfs_ops), &t);
	if (!t.se) {
		ret = 2; /* libfuse said which option it refused */
		goto out_close;
	}
	if (fuse_set_signal_handlers(t.se) != 0)
		goto out_destroy;
	if (fuse_session_mount(t.se, cmd.mountpoint) != 0)
		goto out_remove_handlers;
	if (tfs_killpriv_setup(t.se) != 0)
		goto out_unmount;
	tfs_inval_live(&t, true);
	if (!cmd.foreground) {
		openlog("tierfs", LOG_PID, LOG_DAEMON);
		log_to_syslog = 1;
		daemon_ready(&notify_fd, 0);
	}
	eng_logf(&o.eng.log, LOG_INFO, "mounted %s on '%s'",
		 o.postgres ? "the PostgreSQL store" : o.sqlite_path,
		 cmd.mountpoint);

	loop = fuse_loop_cfg_create();
	if (!loop)
		goto out_unmount;
	fuse_loop_cfg_set_clone_fd(loop, cmd.clone_fd);
	if (cmd.max_threads && cmd.max_threads != UINT_MAX)
		fuse_loop_cfg_set_max_threads(loop, cmd.max_threads);
	if (cmd.max_idle_threads != UINT_MAX)
		fuse_loop_cfg_set_idle_threads(loop, cmd.max_idle_threads);
	if (cmd.singlethread)
		r = fuse_session_loop(t.se);
	else
		r = fuse_session_loop_mt(t.se, loop);
	fuse_loop_cfg_destroy(loop);
	/* libfuse's handlers end the loop with the signal's number: a stop
	 * asked for by SIGTERM, SIGINT or SIGHUP is a clean exit (systemd
	 * counts a unit that exits 1 on SIGTERM as failed) */
	ret = r == 0 || r == SIGTERM || r == SIGINT || r == SIGHUP ? 0 : 1;

out_unmount:
	tfs_inval_live(&t, false);
	fuse_session_unmount(t.se);
out_remove_handlers:
	fuse_remove_signal_handlers(t.se);
out_destroy:
	fuse_session_destroy(t.se);
out_close:
	if (t.eng) {
		tfs_cursors_release(&t.cursors, t.eng);
		/* persists every pending change before exiting */
		r = eng_close(t.eng);
		if (r < 0) {
			eng_logf(&o.eng.log, LOG_ERR,
				 "some changes could not be persisted: %s",
				 strerror(-r));
			ret = 1;
		}
	}
	tfs_handles_release(&t.handles);
	tfs_ctl_release(&t);
out_free_opts:
	daemon_ready(&notify_fd, ret ? ret : 1);
	free(cmd.mountpoint);
	tfs_options_release(&o);
out_free_args:
	fuse_opt_free_args(&args);
	return ret;
}
