//! A hand-written MQTT 5 peer's packet helpers, for what Mosquitto will not do: it honours
//! a client's Maximum Packet Size, so only a peer of our own can send a bigger packet.

use tokio::io::{AsyncRead, AsyncReadExt};

/// CONNACK: session not present, success, no properties.
pub const CONNACK: [u8; 5] = [0x20, 0x03, 0x00, 0x00, 0x00];

/// An MQTT Variable Byte Integer.
pub fn varint(mut n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if n == 0 {
            return out;
        }
    }
}

fn decode_varint(bytes: &[u8]) -> (u32, usize) {
    let mut value = 0u32;
    for (i, b) in bytes.iter().enumerate().take(4) {
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (value, i + 1);
        }
    }
    panic!("malformed variable byte integer {bytes:?}");
}

/// One packet: its first byte and its body; `None` at end of stream.
pub async fn read_packet(stream: &mut (impl AsyncRead + Unpin)) -> Option<(u8, Vec<u8>)> {
    let first = stream.read_u8().await.ok()?;
    let mut len_bytes = Vec::new();
    loop {
        let b = stream.read_u8().await.ok()?;
        len_bytes.push(b);
        if b & 0x80 == 0 {
            break;
        }
    }
    let (len, _) = decode_varint(&len_bytes);
    let mut body = vec![0; len as usize];
    stream.read_exact(&mut body).await.ok()?;
    Some((first, body))
}

/// The Maximum Packet Size property (0x27) of a CONNECT body, if present.
pub fn maximum_packet_size(connect: &[u8]) -> Option<u32> {
    // Protocol name "MQTT" (2 + 4 bytes), version, flags, keep alive (2), properties.
    assert_eq!(&connect[..7], b"\x00\x04MQTT\x05", "an MQTT 5 CONNECT");
    let (props_len, n) = decode_varint(&connect[10..]);
    let mut props = &connect[10 + n..10 + n + props_len as usize];
    let u16_at = |p: &[u8]| usize::from(u16::from_be_bytes([p[0], p[1]]));
    let mut found = None;
    while let Some((&id, rest)) = props.split_first() {
        let size = match id {
            0x11 | 0x27 | 0x18 => 4,
            0x21 | 0x22 => 2,
            0x17 | 0x19 => 1,
            0x15 | 0x16 => 2 + u16_at(rest),
            0x26 => {
                let k = 2 + u16_at(rest);
                k + 2 + u16_at(&rest[k..])
            }
            other => panic!("unexpected CONNECT property {other:#04x}"),
        };
        if id == 0x27 {
            found = Some(u32::from_be_bytes(rest[..4].try_into().unwrap()));
        }
        props = &rest[size..];
    }
    found
}

/// The fixed header and topic of an unsolicited QoS 0 PUBLISH on topic `t` that announces
/// 250 MB; its body is up to the caller.
pub fn oversized_publish_header() -> Vec<u8> {
    let mut header = vec![0x30];
    header.extend(varint(250_000_000));
    header.extend([0x00, 0x01, b't']);
    header
}

/// Whether `packet` is a DISCONNECT with reason 0x95, Packet too large.
pub fn is_packet_too_large(packet: &(u8, Vec<u8>)) -> bool {
    packet.0 == 0xe0 && packet.1.first() == Some(&0x95)
}

/// SUBACK for the SUBSCRIBE `body`, granting QoS 1 to each of its filters.
pub fn suback(subscribe: &[u8]) -> Vec<u8> {
    let (props_len, n) = decode_varint(&subscribe[2..]);
    let mut filters = &subscribe[2 + n + props_len as usize..];
    let mut granted = 0;
    while filters.len() >= 3 {
        let len = usize::from(u16::from_be_bytes([filters[0], filters[1]]));
        filters = &filters[2 + len + 1..];
        granted += 1;
    }
    let mut out = vec![0x90];
    out.extend(varint(3 + granted));
    out.extend(&subscribe[..2]);
    out.push(0x00);
    out.extend(std::iter::repeat_n(0x01, granted as usize));
    out
}

/// Sends `stream`'s client a PUBLISH that announces 250 MB and streams at most twice the
/// maximum packet size of its body, keeping the write half open, and collects what the
/// client sends until it closes the connection. `None` when it did not close within 5 s
/// (it would be waiting for the rest of a packet it should have refused).
pub async fn send_oversized_publish(stream: tokio::net::TcpStream) -> Option<Vec<(u8, Vec<u8>)>> {
    use tokio::io::AsyncWriteExt;
    let (mut reader, mut writer) = stream.into_split();
    let streamer = tokio::spawn(async move {
        let mut sent = 0;
        let _ = writer.write_all(&oversized_publish_header()).await;
        let chunk = [b'x'; 4096];
        while sent < 2 * 65_536 && writer.write_all(&chunk).await.is_ok() {
            sent += chunk.len();
        }
        // Keep the write half open: the close must come from the client.
        std::future::pending::<()>().await;
    });
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        while let Some(packet) = read_packet(&mut reader).await {
            answer.push(packet);
        }
    })
    .await;
    streamer.abort();
    closed.ok().map(|()| answer)
}
