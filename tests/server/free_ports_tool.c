/*
 * free_ports_tool.c - free-ports COUNT: prints the base of COUNT consecutive
 * loopback ports free right now (common/free_ports.h), for the shell tests
 * that start flotillad and redis-server. Exits 1 when none was found.
 */
#include <stdio.h>
#include <stdlib.h>

#include "common/free_ports.h"

int main(int argc, char **argv) {
  char *end = NULL;
  unsigned long count = argc == 2 ? strtoul(argv[1], &end, 10) : 0;
  if (argc != 2 || *end != '\0' || count == 0 || count > 4096) {
    fprintf(stderr, "usage: free-ports COUNT (1..4096)\n");
    return 2;
  }
  uint16_t base = fl_free_ports((uint32_t)count);
  if (base == 0) {
    fprintf(stderr, "free-ports: no %lu consecutive free ports\n", count);
    return 1;
  }
  printf("%u\n", base);
  return 0;
}
