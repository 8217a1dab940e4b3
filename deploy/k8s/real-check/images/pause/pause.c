/*
 * The pod sandbox's process for the stand-in of registry.k8s.io/pause:3.10: it holds the pod's
 * namespaces open, does nothing else, and leaves on SIGINT or SIGTERM. As PID 1 of a pod that
 * shares its PID namespace it is also every orphan's parent, so it reaps them; otherwise they
 * would stay zombies for the pod's lifetime.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig) { stop_signal = sig; }

static void on_child(int sig) {
	int saved = errno;
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0) {
	}
	errno = saved;
}

int main(int argc, char **argv) {
	if (argc > 1 && strcmp(argv[1], "-v") == 0) {
		printf("pause.c stand-in 3.10\n");
		return 0;
	}
	if (getpid() != 1) {
		/* As upstream: say so, but run anyway (a test may start it outside a sandbox). */
		fprintf(stderr, "Warning: pause should be the first process\n");
	}
	struct sigaction stop = {.sa_handler = on_stop};
	struct sigaction child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP | SA_RESTART};
	sigemptyset(&stop.sa_mask);
	sigemptyset(&child.sa_mask);
	if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
	    sigaction(SIGCHLD, &child, NULL) < 0) {
		perror("sigaction");
		return 1;
	}
	/* Blocked outside sigsuspend, so a signal between the test and the wait is not lost. */
	sigset_t blocked, waiting;
	sigemptyset(&blocked);
	sigaddset(&blocked, SIGINT);
	sigaddset(&blocked, SIGTERM);
	sigprocmask(SIG_BLOCK, &blocked, &waiting);
	sigdelset(&waiting, SIGINT);
	sigdelset(&waiting, SIGTERM);
	while (!stop_signal) {
		sigsuspend(&waiting);
	}
	fprintf(stderr, "Shutting down, got signal %d\n", (int)stop_signal);
	return 0;
}
