/* The endpoint record <-> sockaddr. See tg.h for the layout; src/native/endpoint.ts is
 * the TypeScript side of the same format. */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "tg.h"

unsigned tg_ep_to_sockaddr(const uint8_t *ep, int sock_family, void *sa) {
  uint16_t port_be;
  memcpy(&port_be, ep + TG_EP_PORT, 2); /* already network order */
  if (sock_family == AF_INET) {
    if (ep[TG_EP_FAMILY] != 4) return 0;
    struct sockaddr_in *s4 = sa;
    memset(s4, 0, sizeof *s4);
    s4->sin_family = AF_INET;
    s4->sin_port = port_be;
    memcpy(&s4->sin_addr, ep + TG_EP_ADDR, 4);
    return sizeof *s4;
  }
  /* Dual-stack AF_INET6 socket: IPv4 destinations go out as IPv4-mapped addresses. */
  struct sockaddr_in6 *s6 = sa;
  memset(s6, 0, sizeof *s6);
  s6->sin6_family = AF_INET6;
  s6->sin6_port = port_be;
  if (ep[TG_EP_FAMILY] == 4) {
    s6->sin6_addr.s6_addr[10] = 0xff;
    s6->sin6_addr.s6_addr[11] = 0xff;
    memcpy(&s6->sin6_addr.s6_addr[12], ep + TG_EP_ADDR, 4);
  } else {
    memcpy(&s6->sin6_addr, ep + TG_EP_ADDR, 16);
  }
  return sizeof *s6;
}

void tg_ep_from_sockaddr(const void *sa, uint8_t *ep) {
  const struct sockaddr *s = sa;
  memset(ep, 0, TG_EP_SIZE);
  if (s->sa_family == AF_INET) {
    const struct sockaddr_in *s4 = sa;
    ep[TG_EP_FAMILY] = 4;
    memcpy(ep + TG_EP_PORT, &s4->sin_port, 2);
    memcpy(ep + TG_EP_ADDR, &s4->sin_addr, 4);
  } else if (s->sa_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = sa;
    memcpy(ep + TG_EP_PORT, &s6->sin6_port, 2);
    if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
      ep[TG_EP_FAMILY] = 4;
      memcpy(ep + TG_EP_ADDR, &s6->sin6_addr.s6_addr[12], 4);
    } else {
      ep[TG_EP_FAMILY] = 6;
      memcpy(ep + TG_EP_ADDR, &s6->sin6_addr, 16);
    }
  }
  /* any other family leaves an all-zero endpoint (family 0): never produced by UDP */
}

void tg_ep_set_source(uint8_t *ep, const void *addr, size_t len) {
  if ((ep[TG_EP_FAMILY] == 4 && len == 4) || (ep[TG_EP_FAMILY] == 6 && len == 16)) {
    memcpy(ep + TG_EP_SOURCE, addr, len);
    ep[TG_EP_FLAGS] |= TG_EP_HAS_SOURCE;
  }
}
