/*
 * free_ports.h - for tests and benchmarks that start nodes on loopback: a
 * base port with `count` consecutive ports free right now.
 *
 * Nodes need their ports known before they start (every node lists every
 * other's), so an ephemeral port cannot be asked of the kernel. The search
 * stays below Linux's default ephemeral range (32768 up), where outgoing
 * connections would otherwise take a port between this check and the
 * node's bind; it starts at a point that depends on the process id, so
 * test programs running side by side look in different places.
 */
#ifndef FLOTILLA_COMMON_FREE_PORTS_H
#define FLOTILLA_COMMON_FREE_PORTS_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#define FL_FREE_PORTS_LOW 10000u
#define FL_FREE_PORTS_HIGH 32768u

static inline bool fl_port_free(uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in address = {
      .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bool free_port = fd >= 0 && bind(fd, (struct sockaddr *)&address, sizeof(address)) == 0;
  if (fd >= 0) {
    close(fd);
  }
  return free_port;
}

/* The base of `count` free consecutive ports, or 0 when none was found. */
static inline uint16_t fl_free_ports(uint32_t count) {
  uint32_t range = FL_FREE_PORTS_HIGH - FL_FREE_PORTS_LOW;
  uint32_t start = (uint32_t)getpid() * 131u % range;
  for (uint32_t tried = 0; tried < range; tried += count) {
    uint32_t base = FL_FREE_PORTS_LOW + (start + tried) % range;
    bool all = base + count <= FL_FREE_PORTS_HIGH;
    for (uint32_t i = 0; i < count && all; i++) {
      all = fl_port_free((uint16_t)(base + i));
    }
    if (all) {
      return (uint16_t)base;
    }
  }
  return 0;
}

#endif
