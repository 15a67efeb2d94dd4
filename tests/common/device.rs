//! A device on the wire, written by hand: an MQTT 5 client that connects with a Last
//! Will, publishes at QoS 0, and "loses power" by closing its socket without DISCONNECT,
//! so the broker publishes the will as it does for a clock whose Wi-Fi drops.

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::mqtt_peer::{read_packet, varint};

/// A connected device.
pub struct Device {
    stream: TcpStream,
}

/// A Last Will: topic, payload, retained.
pub struct Will<'a> {
    pub topic: &'a str,
    pub payload: &'a [u8],
    pub retain: bool,
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend(u16::try_from(s.len()).unwrap().to_be_bytes());
    out.extend(s);
}

impl Device {
    /// Connects to the broker on 127.0.0.1:`port` (clean start, keep-alive 60 s) with
    /// `will`, and waits for a successful CONNACK.
    pub async fn connect(port: u16, client_id: &str, will: Option<Will<'_>>) -> Self {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut body = Vec::new();
        string(&mut body, b"MQTT");
        body.push(5);
        let mut flags = 0x02;
        if let Some(w) = &will {
            flags |= 0x04;
            if w.retain {
                flags |= 0x20;
            }
        }
        body.push(flags);
        body.extend(60u16.to_be_bytes());
        body.push(0); // no properties
        string(&mut body, client_id.as_bytes());
        if let Some(w) = &will {
            body.push(0); // no will properties
            string(&mut body, w.topic.as_bytes());
            string(&mut body, w.payload);
        }
        let mut packet = vec![0x10];
        packet.extend(varint(u32::try_from(body.len()).unwrap()));
        packet.extend(body);
        stream.write_all(&packet).await.unwrap();
        let (kind, connack) = read_packet(&mut stream).await.expect("a CONNACK");
        assert_eq!(kind, 0x20, "CONNACK expected");
        assert_eq!(connack.get(1), Some(&0), "the broker accepted the device");
        Self { stream }
    }

    /// A QoS 0 PUBLISH (in order with the device's other packets).
    pub async fn publish(&mut self, topic: &str, payload: &[u8], retain: bool) {
        let mut body = Vec::new();
        string(&mut body, topic.as_bytes());
        body.push(0); // no properties
        body.extend(payload);
        let mut packet = vec![0x30 | u8::from(retain)];
        packet.extend(varint(u32::try_from(body.len()).unwrap()));
        packet.extend(body);
        self.stream.write_all(&packet).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Closes the socket without DISCONNECT: the broker publishes the will.
    pub fn lose_power(self) {
        drop(self.stream);
    }
}
