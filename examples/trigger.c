/*
 * trigger SOCKET WORD: sends WORD as one datagram to the unix datagram socket SOCKET
 * (migrate replicate --trigger-socket), from inside a container that has it bind-mounted.
 * WORD: CHECKPOINT (a restorable checkpoint now) or MIGRATE (a planned migration to the
 * standby). Exit 0 once sent; the tool does not answer.
 */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: trigger SOCKET CHECKPOINT|MIGRATE\n");
		return 2;
	}
	struct sockaddr_un to = {.sun_family = AF_UNIX};
	if (strlen(argv[1]) >= sizeof(to.sun_path)) {
		fprintf(stderr, "trigger: socket path too long\n");
		return 2;
	}
	strcpy(to.sun_path, argv[1]);
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (s < 0 || sendto(s, argv[2], strlen(argv[2]), 0, (struct sockaddr *)&to, sizeof(to)) < 0) {
		perror("trigger");
		return 1;
	}
	close(s);
	return 0;
}
