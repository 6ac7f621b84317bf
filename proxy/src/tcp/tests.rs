use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    (client, server)
}

#[tokio::test]
async fn relays_both_ways_with_half_close() {
    // client <-> (down_proxy_side ... up_proxy_side) <-> server
    let (mut client, mut down) = pair().await;
    let (mut up, mut server) = pair().await;
    let relay = tokio::spawn(async move { relay(&mut down, &mut up, None).await });

    client.write_all(b"hello").await.unwrap();
    client.shutdown().await.unwrap(); // half-close: the server must see EOF...
    let mut got = Vec::new();
    server.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hello");
    // ...and can still answer.
    server.write_all(b"world!").await.unwrap();
    server.shutdown().await.unwrap();
    let mut back = Vec::new();
    client.read_to_end(&mut back).await.unwrap();
    assert_eq!(back, b"world!");

    let relayed = relay.await.unwrap();
    assert_eq!(relayed.from_downstream, 5);
    assert_eq!(relayed.from_upstream, 6);
    assert!(!relayed.idle_timeout);
}

#[tokio::test]
async fn idle_timeout_ends_a_quiet_connection() {
    let (mut client, mut down) = pair().await;
    let (mut up, _server) = pair().await;
    let started = std::time::Instant::now();
    let relay =
        tokio::spawn(
            async move { relay(&mut down, &mut up, Some(Duration::from_millis(200))).await },
        );
    // Activity pushes the deadline.
    tokio::time::sleep(Duration::from_millis(120)).await;
    client.write_all(b"x").await.unwrap();
    let relayed = relay.await.unwrap();
    assert!(relayed.idle_timeout);
    assert_eq!(relayed.from_downstream, 1);
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn connect_binds_and_reports_failures() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    let bind: IpAddr = "127.0.0.6".parse().unwrap();
    let stream = connect(target, Some(bind), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(stream.local_addr().unwrap().ip(), bind);
    let (_, peer) = listener.accept().await.unwrap();
    assert_eq!(peer.ip(), bind);

    drop(listener);
    let err = connect(target, None, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
}

#[tokio::test]
async fn a_stop_signal_ends_an_open_connection_with_its_reason() {
    let (mut client, mut down) = pair().await;
    let (mut up, mut server) = pair().await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let stop = async move {
        let _ = rx.await;
        Detail::Static("rbac_access_denied_matched_policy[none]")
    };
    let relay = tokio::spawn(async move { relay_until(&mut down, &mut up, None, stop).await });
    client.write_all(b"hi").await.unwrap();
    let mut got = [0u8; 2];
    server.read_exact(&mut got).await.unwrap();
    tx.send(()).unwrap();
    let relayed = relay.await.unwrap();
    assert_eq!(
        relayed.revoked,
        Some(Detail::Static("rbac_access_denied_matched_policy[none]"))
    );
    assert_eq!(relayed.from_downstream, 2);
    // Both sides see the connection end.
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).await.unwrap_or(0), 0);
    assert_eq!(server.read_to_end(&mut rest).await.unwrap_or(0), 0);
}
