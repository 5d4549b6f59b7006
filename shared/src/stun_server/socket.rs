//! Naming the server's four sockets.

use crate::stun::ChangeRequest;
use crate::transmit::SocketIndex;

/// Which of the server's two IP addresses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum IpSlot {
    /// The primary address (A1 in RFC 5780).
    Primary,
    /// The alternate address (A2).
    Alternate,
}

/// Which of the server's two ports.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum PortSlot {
    /// The primary port (P1, default 3478).
    Primary,
    /// The alternate port (P2, default 3479).
    Alternate,
}

/// One of the four UDP sockets: an IP slot and a port slot.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ServerSocket {
    /// The IP address slot.
    pub ip: IpSlot,
    /// The port slot.
    pub port: PortSlot,
}

impl ServerSocket {
    /// Primary address, primary port: where clients start.
    pub const PRIMARY: ServerSocket = ServerSocket {
        ip: IpSlot::Primary,
        port: PortSlot::Primary,
    };

    /// All four sockets, in [`ServerSocket::index`] order.
    pub const ALL: [ServerSocket; 4] = [
        ServerSocket {
            ip: IpSlot::Primary,
            port: PortSlot::Primary,
        },
        ServerSocket {
            ip: IpSlot::Primary,
            port: PortSlot::Alternate,
        },
        ServerSocket {
            ip: IpSlot::Alternate,
            port: PortSlot::Primary,
        },
        ServerSocket {
            ip: IpSlot::Alternate,
            port: PortSlot::Alternate,
        },
    ];

    /// A dense index 0..4, for arrays of per-socket state in drivers.
    pub fn index(self) -> usize {
        let ip = match self.ip {
            IpSlot::Primary => 0,
            IpSlot::Alternate => 2,
        };
        let port = match self.port {
            PortSlot::Primary => 0,
            PortSlot::Alternate => 1,
        };
        ip + port
    }

    /// The socket a [`SocketIndex`] names ([`ServerSocket::index`] order); `None` past 3.
    pub fn from_socket_index(socket: SocketIndex) -> Option<ServerSocket> {
        ServerSocket::ALL.get(socket.index()).copied()
    }

    /// The socket with the other IP and the other port: what OTHER-ADDRESS names.
    pub fn other(self) -> ServerSocket {
        self.changed(ChangeRequest {
            change_ip: true,
            change_port: true,
        })
    }

    /// The socket a response must come from under these CHANGE-REQUEST flags (RFC 5780 table 1).
    pub fn changed(self, change: ChangeRequest) -> ServerSocket {
        let ip = match (self.ip, change.change_ip) {
            (ip, false) => ip,
            (IpSlot::Primary, true) => IpSlot::Alternate,
            (IpSlot::Alternate, true) => IpSlot::Primary,
        };
        let port = match (self.port, change.change_port) {
            (port, false) => port,
            (PortSlot::Primary, true) => PortSlot::Alternate,
            (PortSlot::Alternate, true) => PortSlot::Primary,
        };
        ServerSocket { ip, port }
    }
}

/// How a request arrived.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Transport {
    /// A UDP datagram on one of the four sockets.
    Udp,
    /// A message on a TCP connection (the response must go back on that connection, so
    /// CHANGE-REQUEST and RESPONSE-PORT cannot be honoured).
    Tcp,
}

impl From<ServerSocket> for SocketIndex {
    /// The [`ServerSocket::index`] as the index a [`crate::Transmit`] names.
    fn from(socket: ServerSocket) -> SocketIndex {
        SocketIndex(socket.index() as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_are_dense_and_match_all() {
        for (i, s) in ServerSocket::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
    }

    #[test]
    fn other_changes_both_and_is_an_involution() {
        for s in ServerSocket::ALL {
            let o = s.other();
            assert_ne!(o.ip, s.ip);
            assert_ne!(o.port, s.port);
            assert_eq!(o.other(), s);
            assert_eq!(s.changed(ChangeRequest::default()), s);
        }
    }
}
