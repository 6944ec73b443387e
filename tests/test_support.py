"""The test harness itself: the broker fixture really runs mosquitto and passes messages."""

from __future__ import annotations

import threading

import paho.mqtt.client as mqtt

from tests.support.procs import Mosquitto


def test_mosquitto_fixture_relays_a_qos1_message(mosquitto: Mosquitto) -> None:
    got = threading.Event()
    received: list[bytes] = []

    def on_message(client, userdata, message) -> None:
        received.append(message.payload)
        got.set()

    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", mosquitto.port)
    sub.loop_start()
    try:
        sub.subscribe("t/x", qos=1)
        assert subscribed.wait(10)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        pub.connect("127.0.0.1", mosquitto.port)
        pub.loop_start()
        try:
            pub.publish("t/x", b"hello", qos=1).wait_for_publish(10)
        finally:
            pub.loop_stop()
            pub.disconnect()
        assert got.wait(10)
        assert received == [b"hello"]
    finally:
        sub.loop_stop()
        sub.disconnect()
