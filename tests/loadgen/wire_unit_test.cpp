// The wires of --protocol (loadgen/wire.hpp): what each sends, and what it makes of the
// bytes a server sends, however those are split over reads. The servers' bytes are as
// nats-server 2.9, redis-server 7.0 and mosquitto 2.0 sent them (captured over loopback).
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "engine.hpp"
#include "wire.hpp"

namespace loadgen {
namespace {

using namespace std::string_literals;

// What a decoder handed over, in order: "KIND:TEXT" per message, "answer:BYTES", "garbled".
struct Recorder : MessageSink {
  std::vector<std::string> seen;
  void on_message(Connection&, const Message& message, std::int64_t) override {
    static const char* const kinds[] = {"line", "joined", "stats", "full", "error", "other", "own"};
    seen.push_back(kinds[static_cast<int>(message.kind)] + ":"s + std::string(message.text));
  }
  void answer(Connection&, std::string_view bytes) override { seen.push_back("answer:" + std::string(bytes)); }
  void garbled(Connection& connection, std::string_view) override {
    seen.push_back("garbled");
    connection.state = ConnectionState::closed;  // as the worker does
  }
};

// What client `id` (this process's first client being `offset`) makes of bytes read in
// pieces of `piece` bytes (0: all at once).
std::vector<std::string> decoded(Protocol protocol, const std::string& bytes, std::size_t piece, std::uint32_t id = 4,
                                 std::uint32_t offset = 0) {
  const auto wire = make_wire(protocol, offset);
  Connection connection(id);
  connection.state = ConnectionState::open;
  Recorder recorder;
  for (std::size_t at = 0; at < bytes.size(); at += piece ? piece : bytes.size())
    wire->decode(connection, std::string_view(bytes).substr(at, piece ? piece : bytes.size()), 0, recorder);
  if (connection.state == ConnectionState::open) {
    EXPECT_TRUE(connection.partial.empty()) << "bytes left over: " << connection.partial;
  }
  return recorder.seen;
}

// The same messages whatever the reads: whole, byte by byte, and split once at every point.
void expect_messages(Protocol protocol, const std::string& bytes, const std::vector<std::string>& expected,
                     std::uint32_t id = 4, std::uint32_t offset = 0) {
  EXPECT_EQ(decoded(protocol, bytes, 0, id, offset), expected) << "whole";
  EXPECT_EQ(decoded(protocol, bytes, 1, id, offset), expected) << "byte by byte";
  for (std::size_t split = 1; split < bytes.size(); ++split) {
    const auto wire = make_wire(protocol, offset);
    Connection connection(id);
    connection.state = ConnectionState::open;
    Recorder recorder;
    wire->decode(connection, std::string_view(bytes).substr(0, split), 0, recorder);
    wire->decode(connection, std::string_view(bytes).substr(split), 0, recorder);
    EXPECT_EQ(recorder.seen, expected) << "split at " << split;
  }
}

std::string line_of(std::uint32_t sender, std::size_t size) {
  std::string line;
  format_chat_line(line, sender, 3, 123456789, static_cast<unsigned>(size));
  return line;
}

TEST(Wire, NamesAndRooms) {
  EXPECT_STREQ(protocol_name(Protocol::chat), "chat");
  EXPECT_STREQ(protocol_name(Protocol::mqtt), "mqtt");
  EXPECT_EQ(room_name(0), "r0");
  EXPECT_EQ(room_name(4294967295u), "r4294967295");
  EXPECT_TRUE(make_wire(Protocol::chat, 0)->has_lobby());
  EXPECT_FALSE(make_wire(Protocol::redis, 0)->has_lobby());
}

TEST(ChatWire, SendsTheChatProtocolAndReadsLines) {
  const auto wire = make_wire(Protocol::chat, 0);
  std::string out = "stale", scratch;
  wire->hello(out, 7);
  EXPECT_EQ(out, "");
  wire->join(out, 12);
  EXPECT_EQ(out, "/join r12\n");
  const std::string line = line_of(4, 64);
  EXPECT_EQ(wire->publish(scratch, 12, line), line);
  expect_messages(Protocol::chat, "/joined r12\n" + line + "/error server-full\n/stats clients=2\n//x\n",
                  {"joined:/joined r12", "line:" + line.substr(0, 63), "full:/error server-full",
                   "stats:/stats clients=2", "line://x"});
}

TEST(NatsWire, SendsConnectWithoutEchoSubPingAndPub) {
  const auto wire = make_wire(Protocol::nats, 0);
  std::string out, scratch;
  wire->hello(out, 7);
  EXPECT_EQ(out, R"(CONNECT {"verbose":false,"pedantic":false,"echo":false,"protocol":1,"name":"loadgen"})"
                 "\r\n");
  wire->join(out, 7);
  EXPECT_EQ(out, "SUB r7 1\r\nPING\r\n");
  const std::string line = line_of(4, 64);
  EXPECT_EQ(wire->publish(scratch, 7, line), "PUB r7 64\r\n" + line + "\r\n");
}

TEST(NatsWire, ReadsMsgByItsLengthAnswersPingAndTakesPongForTheSubscription) {
  const std::string info =
      R"(INFO {"server_id":"NAGHO","version":"2.9.10","proto":1,"headers":true,"max_payload":1048576} )";
  // The payload holds CRLF: only its length says where it ends.
  const std::string stream = info + "\r\nPONG\r\nMSG r7 1 10\r\n3 0 99 x\r\n\r\nPING\r\nMSG r7 1 8\r\n4 1 5 x\n\r\n" +
                             "-ERR 'maximum connections exceeded'\r\n-ERR 'Authorization Violation'\r\n";
  expect_messages(Protocol::nats, stream,
                  {"other:" + info, "joined:PONG", "line:3 0 99 x\r", "answer:PONG\r\n", "own:4 1 5 x",
                   "full:-ERR 'maximum connections exceeded'", "error:-ERR 'Authorization Violation'"});
}

TEST(NatsWire, AControlLineLongerThanTheServersIsGarbled) {
  EXPECT_EQ(decoded(Protocol::nats, "PONG\r\n" + std::string(5000, 'x'), 0),
            (std::vector<std::string>{"joined:PONG", "garbled"}));
  EXPECT_EQ(decoded(Protocol::nats, "MSG r1 1 ten\r\n", 0), std::vector<std::string>{"garbled"});
}

TEST(RedisWire, SendsHello3SubscribeAndPublishAsCommands) {
  const auto wire = make_wire(Protocol::redis, 0);
  std::string out, scratch;
  wire->hello(out, 7);
  EXPECT_EQ(out, "*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n");
  wire->join(out, 7);
  EXPECT_EQ(out, "*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\nr7\r\n");
  const std::string line = line_of(4, 64);
  EXPECT_EQ(wire->publish(scratch, 7, line), "*3\r\n$7\r\nPUBLISH\r\n$2\r\nr7\r\n$64\r\n" + line + "\r\n");
}

TEST(RedisWire, ReadsPushFramesAndTellsTheSendersOwnCopy) {
  // HELLO's map, SUBSCRIBE's push, then a PUBLISH by client 5: its own copy, then its count.
  const std::string hello =
      "%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$6\r\n7.0.15\r\n$5\r\nproto\r\n:3\r\n$2\r\nid\r\n:124\r\n"
      "$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n";
  const std::string stream =
      hello + ">3\r\n$9\r\nsubscribe\r\n$2\r\nr7\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$2\r\nr7\r\n$6\r\n5 0 1\n\r\n:1\r\n";
  const std::vector<std::string> others{"other:7", "joined:subscribe", "line:5 0 1", "other:1"};
  expect_messages(Protocol::redis, stream, others, 4);
  expect_messages(Protocol::redis, stream, {"other:7", "joined:subscribe", "own:5 0 1", "other:1"}, 5);
  // Client 5 of the run is this process's client 1 when its slice starts at 4.
  EXPECT_EQ(decoded(Protocol::redis, stream, 0, 1, 4)[2], "own:5 0 1");
}

TEST(RedisWire, ErrorsFullServerAndGarbledBytes) {
  expect_messages(Protocol::redis, "-ERR max number of clients reached\r\n-NOPROTO sorry\r\n_\r\n",
                  {"full:ERR max number of clients reached", "error:NOPROTO sorry", "other:"});
  EXPECT_EQ(decoded(Protocol::redis, ":1\r\n?what\r\n:2\r\n", 0), (std::vector<std::string>{"other:1", "garbled"}));
  EXPECT_EQ(decoded(Protocol::redis, "$x\r\n", 0), std::vector<std::string>{"garbled"});
}

TEST(MqttWire, SendsConnectSubscribeWithNoLocalAndQos0Publish) {
  const auto wire = make_wire(Protocol::mqtt, 0);
  std::string out, scratch;
  wire->hello(out, 7);
  const std::string id = "loadgen-" + std::to_string(::getpid()) + "-7";
  const std::string body =
      "\0\4MQTT\5\2\0\0\0"s + static_cast<char>(id.size() >> 8) + static_cast<char>(id.size()) + id;
  EXPECT_EQ(out, "\x10"s + static_cast<char>(body.size()) + body);
  wire->join(out, 7);
  // Packet id 1, no properties, "r7", options No Local (0x04) at QoS 0.
  EXPECT_EQ(out, "\x82\x08\0\1\0\0\2r7\x04"s);
  const std::string line = line_of(4, 64);
  EXPECT_EQ(wire->publish(scratch, 7, line), "\x30"s + static_cast<char>(2 + 2 + 1 + 64) + "\0\2r7\0"s + line);
}

TEST(MqttWire, ReadsWhatItPublishesWhateverTheRemainingLengthsSize) {
  // A broker hands a QoS 0 PUBLISH on as it came; 64, 300 and 20000 bytes take a remaining
  // length of one, two and three bytes.
  const auto wire = make_wire(Protocol::mqtt, 0);
  std::string stream, scratch;
  std::vector<std::string> expected;
  for (const std::size_t size : {64, 300, 20000}) {
    const std::string line = line_of(3, size);
    stream += wire->publish(scratch, 7, line);
    expected.push_back("line:" + line.substr(0, size - 1));
  }
  EXPECT_EQ(decoded(Protocol::mqtt, stream, 0), expected);
  EXPECT_EQ(decoded(Protocol::mqtt, stream, 1), expected);
  EXPECT_EQ(decoded(Protocol::mqtt, stream, 4096), expected);
}

TEST(MqttWire, ReadsConnackSubackAndDeliveriesAsMosquittoSendsThem) {
  // CONNACK with properties (topic alias maximum, server keep alive 65535 s, receive
  // maximum), SUBACK granting QoS 0, a delivery, one of client 4's own.
  const std::string connack = "\x20\x0c\x00\x00\x09\x22\x00\x0a\x13\xff\xff\x21\x00\x14"s;
  const std::string suback = "\x90\x04\x00\x01\x00\x00"s;
  const std::string delivery = "\x30\x0f\x00\x02r7\x00"s + "3 0 99 xx\n";
  const std::string own = "\x30\x0f\x00\x02r7\x00"s + "4 0 99 xx\n";
  expect_messages(Protocol::mqtt, connack + suback + delivery + own,
                  {"other:CONNACK", "joined:SUBACK", "line:3 0 99 xx", "own:4 0 99 xx"});
}

TEST(MqttWire, RefusalsAndGarbledBytes) {
  expect_messages(Protocol::mqtt, "\x20\x03\x00\x97\x00\x90\x04\x00\x01\x00\x80\xe0\x01\x8e"s,
                  {"full:CONNACK reason code 0x97", "error:SUBACK reason code 0x80",
                   "error:DISCONNECT from the broker, reason code 0x8e"});
  EXPECT_EQ(decoded(Protocol::mqtt, "\x30\xff\xff\xff\xff\x01"s, 0), std::vector<std::string>{"garbled"});
}

}  // namespace
}  // namespace loadgen
