//! `TCP_NODELAY` on a PostgreSQL sink connection.
//!
//! sqlx 0.9 opens TCP connections without `TCP_NODELAY` and gives no access to the socket. Without it,
//! Nagle's algorithm holds the few bytes of a batch's `CopyDone`, written after the batch's data, until
//! the server acknowledges that data, which a Linux server delays by tens of milliseconds: a fixed wait
//! on every batch, longer than the whole batch takes once the rest is fast (`docs/performance.md`).
//!
//! The socket is found among this process's descriptors by the port the server saw the connection come
//! from (`inet_client_port()`) and the server's port, and set through a duplicate of the descriptor
//! (`pidfd_getfd`), so no descriptor is borrowed that this code does not own. Linux only; anywhere else,
//! over a Unix socket, or if a step fails (old kernel, no `/proc`), the connection stays as it was and
//! only batches are slower.

use sqlx::postgres::PgConnection;

/// Sets `TCP_NODELAY` on `conn`'s socket when it is TCP; whether it did.
pub(crate) async fn set_nodelay(conn: &mut PgConnection) -> bool {
    let Some((local, remote)) = ports(conn).await else {
        return false;
    };
    let set = find_socket(local, remote).and_then(|socket| match socket {
        Some(socket) => set_on(&socket).map(|()| true),
        None => Ok(false),
    });
    set.unwrap_or_else(|error| {
        tracing::debug!(%error, "cannot set TCP_NODELAY on the sink connection");
        false
    })
}

/// The connection's local and remote TCP ports as the server sees them; `None` over a Unix socket.
async fn ports(conn: &mut PgConnection) -> Option<(u16, u16)> {
    let (client, server): (Option<i32>, Option<i32>) =
        sqlx::query_as("SELECT inet_client_port(), inet_server_port()")
            .fetch_one(&mut *conn)
            .await
            .ok()?;
    Some((u16::try_from(client?).ok()?, u16::try_from(server?).ok()?))
}

#[cfg(target_os = "linux")]
type Socket = rustix::fd::OwnedFd;
#[cfg(not(target_os = "linux"))]
type Socket = ();

/// A duplicate of this process's TCP socket from local port `local` to remote port `remote`.
#[cfg(target_os = "linux")]
fn find_socket(local: u16, remote: u16) -> std::io::Result<Option<Socket>> {
    use rustix::net::{getpeername, getsockname};
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let port =
        |address: rustix::net::SocketAddrAny| std::net::SocketAddr::try_from(address).ok().map(|a| a.port());
    let this_process = pidfd_open(getpid(), PidfdFlags::empty())?;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|name| name.parse().ok()) else {
            continue;
        };
        let is_socket = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.as_os_str().as_encoded_bytes().starts_with(b"socket:"));
        if !is_socket {
            continue;
        }
        // The descriptor may have been closed since it was listed; then it is not ours to look at.
        let Ok(socket) = pidfd_getfd(&this_process, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        if getsockname(&socket).ok().and_then(port) == Some(local)
            && getpeername(&socket).ok().flatten().and_then(port) == Some(remote)
        {
            return Ok(Some(socket));
        }
    }
    Ok(None)
}

#[cfg(target_os = "linux")]
fn set_on(socket: &Socket) -> std::io::Result<()> {
    Ok(rustix::net::sockopt::set_tcp_nodelay(socket, true)?)
}

#[cfg(not(target_os = "linux"))]
fn find_socket(_local: u16, _remote: u16) -> std::io::Result<Option<Socket>> {
    Ok(None)
}

#[cfg(not(target_os = "linux"))]
fn set_on(_socket: &Socket) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use sqlx::Connection;

    use super::*;

    #[tokio::test]
    async fn a_tcp_connection_gets_tcp_nodelay() {
        let Ok(url) = std::env::var("FLOWRUN_TEST_POSTGRES_URL") else {
            eprintln!("skipped: FLOWRUN_TEST_POSTGRES_URL is not set");
            return;
        };
        let mut conn = PgConnection::connect(&url).await.expect("connects");
        let (local, remote) = ports(&mut conn).await.expect("a TCP connection");
        let nodelay = || {
            let socket = find_socket(local, remote)
                .expect("the descriptors can be read")
                .expect("the connection's socket is found");
            rustix::net::sockopt::tcp_nodelay(&socket).expect("the option can be read")
        };
        assert!(!nodelay(), "sqlx connects without TCP_NODELAY");
        assert!(set_nodelay(&mut conn).await);
        assert!(nodelay());
        // The connection still works.
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .expect("a query");
        assert_eq!(one, 1);
    }
}
