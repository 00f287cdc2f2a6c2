module Kcl.Core.Tests.JsonTests

open System
open System.Text
open System.Text.Json
open FsCheck
open FsCheck.FSharp
open Xunit
open Kcl.Core
open Kcl.Core.Tests.Generators

// ---- helpers ------------------------------------------------------------------------------------------------------

let private decodeBytes (bytes: byte[]) = Json.decodeDaemonMessage (ReadOnlySpan bytes)
let private decodeChildBytes (bytes: byte[]) = Json.decodeChildMessage (ReadOnlySpan bytes)
let private encodeUtf8 = Json.encodeDaemonMessage Json.DaemonCharset.Utf8
let private seqNo = SequenceNumber.parse
let private at (millis: int64) = Some(DateTimeOffset.FromUnixTimeMilliseconds millis)

let private A = "49590338271490256608559692538361571095921575989136588898"
let private B = "49590338271490256608559692538362780021741190618311294978"
let private C = "49590338271490256608559692538363988947560805247485001730"
let private K = "49590338271490256608559692540925702759324208523137515618"

let private record (data: byte[]) key sequence sub arrival =
    { Data = data
      PartitionKey = key
      SequenceNumber = seqNo sequence
      SubSequenceNumber = sub
      ApproximateArrivalTimestamp = arrival }

let private ascii (text: string) = Encoding.ASCII.GetBytes text
let private utf8 (text: string) = Encoding.UTF8.GetBytes text

let private expectError (expected: ProtocolError) (actual: Result<'T, ProtocolError>) =
    Assert.Equal(Error expected, actual)

let private isError =
    function
    | Error _ -> true
    | Ok _ -> false

// ---- golden transcripts (TRANSCRIPTS.md): every D> line, both directions ------------------------------------------

let private t04Batch =
    """{"action":"processRecords","records":[{"data":"aGVsbG8=","partitionKey":"pk-1","sequenceNumber":"49590338271490256608559692538361571095921575989136588898","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":0,"action":"record"},{"data":"d29ybGQ=","partitionKey":"pk-2","sequenceNumber":"49590338271490256608559692538362780021741190618311294978","approximateArrivalTimestamp":1700000000456,"subSequenceNumber":0,"action":"record"}],"millisBehindLatest":0}"""

let private t11Batch =
    """{"action":"processRecords","records":[{"data":"AP/+Cg0i","partitionKey":"bin","sequenceNumber":"49590338271490256608559692538361571095921575989136588898","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":0,"action":"record"},{"data":"8J+YgA==","partitionKey":"ключ-ü-€","sequenceNumber":"49590338271490256608559692538362780021741190618311294978","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":0,"action":"record"},{"data":"aMOpbGxvIHfDtnJsZA==","partitionKey":"tab\tq\"bs\\","sequenceNumber":"49590338271490256608559692538363988947560805247485001730","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":0,"action":"record"},{"data":"","partitionKey":"empty","sequenceNumber":"49590338271490256608559692540925702759324208523137515618","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":0,"action":"record"}],"millisBehindLatest":0}"""

let private t11Records keyOfRecord2 =
    [| record [| 0x00uy; 0xFFuy; 0xFEuy; 0x0Auy; 0x0Duy; 0x22uy |] "bin" A 0L (at 1700000000123L)
       record [| 0xF0uy; 0x9Fuy; 0x98uy; 0x80uy |] keyOfRecord2 B 0L (at 1700000000123L)
       record (utf8 "héllo wörld") "tab\tq\"bs\\" C 0L (at 1700000000123L)
       record [||] "empty" K 0L (at 1700000000123L) |]

let private daemonLines: (string * DaemonMessage) list =
    [ """{"action":"initialize","shardId":"shardId-000000000000","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}""",
      DaemonMessage.Initialize(ShardId "shardId-000000000000", Some(seqNo "TRIM_HORIZON"), Some 0L)
      """{"action":"initialize","shardId":"shardId-000000000001","sequenceNumber":"49590338271490256608559692538361571095921575989136588898","subSequenceNumber":3}""",
      DaemonMessage.Initialize(ShardId "shardId-000000000001", Some(seqNo A), Some 3L)
      """{"action":"initialize","shardId":"shardId-000000000002","sequenceNumber":null,"subSequenceNumber":null}""",
      DaemonMessage.Initialize(ShardId "shardId-000000000002", None, None)
      t04Batch,
      DaemonMessage.ProcessRecords(
          [| record (utf8 "hello") "pk-1" A 0L (at 1700000000123L)
             record (utf8 "world") "pk-2" B 0L (at 1700000000456L) |],
          Some 0L
      )
      """{"action":"checkpoint","sequenceNumber":"49590338271490256608559692538362780021741190618311294978","subSequenceNumber":0,"error":null}""",
      DaemonMessage.CheckpointReply(Some B, Some 0L, None)
      """{"action":"processRecords","records":[{"data":"b3JkZXItMQ==","partitionKey":"order","sequenceNumber":"49590338271490256608559692538361571095921575989136588898","approximateArrivalTimestamp":1700000001000,"subSequenceNumber":0,"action":"record"},{"data":"b3JkZXItMg==","partitionKey":"order","sequenceNumber":"49590338271490256608559692538362780021741190618311294978","approximateArrivalTimestamp":1700000001000,"subSequenceNumber":0,"action":"record"},{"data":"b3JkZXItMw==","partitionKey":"order","sequenceNumber":"49590338271490256608559692538363988947560805247485001730","approximateArrivalTimestamp":1700000002000,"subSequenceNumber":0,"action":"record"}],"millisBehindLatest":1500}""",
      DaemonMessage.ProcessRecords(
          [| record (utf8 "order-1") "order" A 0L (at 1700000001000L)
             record (utf8 "order-2") "order" B 0L (at 1700000001000L)
             record (utf8 "order-3") "order" C 0L (at 1700000002000L) |],
          Some 1500L
      )
      """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null,"error":null}""",
      DaemonMessage.CheckpointReply(None, None, None)
      """{"action":"checkpoint","sequenceNumber":"49590338271490256608559692538361571095921575989136588898","subSequenceNumber":0,"error":null}""",
      DaemonMessage.CheckpointReply(Some A, Some 0L, None)
      """{"action":"processRecords","records":[{"data":"YWJj","partitionKey":"k","sequenceNumber":"49590338271490256608559692538363988947560805247485001730","approximateArrivalTimestamp":1700000002000,"subSequenceNumber":0,"action":"record"}],"millisBehindLatest":0}""",
      DaemonMessage.ProcessRecords([| record (utf8 "abc") "k" C 0L (at 1700000002000L) |], Some 0L)
      """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null,"error":"ThrottlingException"}""",
      DaemonMessage.CheckpointReply(None, None, Some CheckpointError.Throttling)
      """{"action":"checkpoint","sequenceNumber":"12345","subSequenceNumber":null,"error":"IllegalArgumentException"}""",
      DaemonMessage.CheckpointReply(Some "12345", None, Some CheckpointError.IllegalArgument)
      """{"action":"processRecords","records":[],"millisBehindLatest":120000}""",
      DaemonMessage.ProcessRecords([||], Some 120000L)
      """{"action":"processRecords","records":[],"millisBehindLatest":null}""", DaemonMessage.ProcessRecords([||], None)
      """{"action":"processRecords","records":[{"data":"YWI=","partitionKey":"agg-pk-1","sequenceNumber":"49590338271490256608559692540925702759324208523137515618","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":0,"action":"record"},{"data":"YWJj","partitionKey":"agg-pk-2","sequenceNumber":"49590338271490256608559692540925702759324208523137515618","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":1,"action":"record"},{"data":"bGFzdA==","partitionKey":"agg-pk-3","sequenceNumber":"49590338271490256608559692540925702759324208523137515618","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":2,"action":"record"}],"millisBehindLatest":0}""",
      DaemonMessage.ProcessRecords(
          [| record (utf8 "ab") "agg-pk-1" K 0L (at 1700000000123L)
             record (utf8 "abc") "agg-pk-2" K 1L (at 1700000000123L)
             record (utf8 "last") "agg-pk-3" K 2L (at 1700000000123L) |],
          Some 0L
      )
      """{"action":"checkpoint","sequenceNumber":"49590338271490256608559692540925702759324208523137515618","subSequenceNumber":1,"error":null}""",
      DaemonMessage.CheckpointReply(Some K, Some 1L, None)
      t11Batch, DaemonMessage.ProcessRecords(t11Records "ключ-ü-€", Some 0L)
      """{"action":"shardEnded"}""", DaemonMessage.ShardEnded
      """{"action":"checkpoint","sequenceNumber":"SHARD_END","subSequenceNumber":null,"error":null}""",
      DaemonMessage.CheckpointReply(Some "SHARD_END", None, None)
      """{"action":"leaseLost"}""", DaemonMessage.LeaseLost
      """{"action":"shutdownRequested"}""", DaemonMessage.ShutdownRequested
      """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null,"error":"ShutdownException"}""",
      DaemonMessage.CheckpointReply(None, None, Some CheckpointError.Shutdown)
      """{"action":"shutdown","reason":"TERMINATE"}""", DaemonMessage.Shutdown ShutdownReason.Terminate
      """{"action":"shutdown","reason":"ZOMBIE"}""", DaemonMessage.Shutdown ShutdownReason.Zombie
      """{"action":"shutdown","reason":"SHARD_END"}""", DaemonMessage.Shutdown ShutdownReason.ShardEnd
      """{"action":"shutdown","reason":"LEASE_LOST"}""", DaemonMessage.Shutdown ShutdownReason.LeaseLost ]

let private childLines: (string * ChildMessage) list =
    [ for action in [ "initialize"; "processRecords"; "leaseLost"; "shardEnded"; "shutdownRequested"; "shutdown" ] ->
          sprintf """{"action":"status","responseFor":"%s"}""" action, ChildMessage.Status action
      for sequence, sub in [ B, 0L; A, 0L; K, 1L ] ->
          sprintf """{"action":"checkpoint","sequenceNumber":"%s","subSequenceNumber":%d}""" sequence sub,
          ChildMessage.Checkpoint(CheckpointTarget.At(seqNo sequence, Some sub))
      yield
          """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null}""",
          ChildMessage.Checkpoint CheckpointTarget.LastDelivered
      yield
          """{"action":"checkpoint","sequenceNumber":"12345","subSequenceNumber":null}""",
          ChildMessage.Checkpoint(CheckpointTarget.At(seqNo "12345", None))
      yield
          """{"action":"checkpoint","sequenceNumber":"SHARD_END","subSequenceNumber":null}""",
          ChildMessage.Checkpoint(CheckpointTarget.At(SequenceNumber.shardEnd, None)) ]

[<Fact>]
let ``every daemon line in the transcripts decodes to what the processor must see`` () =
    for line, expected in daemonLines do
        Assert.Equal(Ok expected, Json.decodeDaemonLine line)
        Assert.Equal(Ok expected, decodeBytes (utf8 line))

[<Fact>]
let ``encoding each transcript message reproduces the daemon's line byte for byte`` () =
    for line, message in daemonLines do
        Assert.Equal<byte>(utf8 line, encodeUtf8 message)

[<Fact>]
let ``a daemon in a POSIX locale writes each non-ASCII code point of a partition key as one question mark`` () =
    let bytes = Json.encodeDaemonMessage Json.DaemonCharset.PosixAscii (DaemonMessage.ProcessRecords(t11Records "ключ-ü-€", Some 0L))
    Assert.Equal<byte>(utf8 (t11Batch.Replace("ключ-ü-€", "????-?-?")), bytes)
    Assert.Equal(Ok(DaemonMessage.ProcessRecords(t11Records "????-?-?", Some 0L)), decodeBytes bytes)

[<Fact>]
let ``a surrogate pair becomes a single question mark in a POSIX locale`` () =
    let message = DaemonMessage.Initialize(ShardId "a😀b", None, None)
    let text = Encoding.ASCII.GetString(Json.encodeDaemonMessage Json.DaemonCharset.PosixAscii message)
    Assert.Equal("""{"action":"initialize","shardId":"a?b","sequenceNumber":null,"subSequenceNumber":null}""", text)

[<Fact>]
let ``every child line in the transcripts is exactly what encodeChildMessage writes`` () =
    for line, message in childLines do
        Assert.Equal(line, Json.encodeChildMessage message)
        Assert.Equal(Ok message, Json.decodeChildLine line)

[<Fact>]
let ``control characters are escaped as Jackson escapes them, and slash and DEL are left alone`` () =
    let key = String [| for c in 0 .. 0x1F -> char c |] + "/\u007F\"\\"
    let message = DaemonMessage.Initialize(ShardId key, None, None)
    let text = Encoding.UTF8.GetString(encodeUtf8 message)

    let expected =
        """\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000B\f\r\u000E\u000F"""
        + """\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001A\u001B\u001C\u001D\u001E\u001F"""
        + "/\u007F\\\"\\\\"

    Assert.Equal(sprintf """{"action":"initialize","shardId":"%s","sequenceNumber":null,"subSequenceNumber":null}""" expected, text)
    Assert.Equal(Ok message, decodeBytes (utf8 text))

// ---- round trips -------------------------------------------------------------------------------------------------

[<Fact>]
let ``every daemon message survives encoding and decoding untouched`` () =
    Prop.forAll (Arb.fromGen daemonMessage) (fun message -> decodeBytes (encodeUtf8 message) = Ok message)
    |> check 500

[<Fact>]
let ``every child message survives encoding and decoding untouched`` () =
    Prop.forAll (Arb.fromGen childMessage) (fun message -> Json.decodeChildLine (Json.encodeChildMessage message) = Ok message)
    |> check 500

[<Fact>]
let ``payloads, long digit strings and Unicode partition keys arrive exactly as sent`` () =
    Prop.forAll (Arb.fromGen (Gen.zip3 payload digitString unicodeString)) (fun (data, digits, key) ->
        let sent = record data key digits 7L None

        match decodeBytes (encodeUtf8 (DaemonMessage.ProcessRecords([| sent |], None))) with
        | Ok(DaemonMessage.ProcessRecords([| received |], None)) ->
            received.Data = data && received.SequenceNumber.Value = digits && received.PartitionKey = key
        | _ -> false)
    |> check 300

[<Fact>]
let ``a POSIX-locale daemon's line decodes to the message with each non-ASCII code point replaced`` () =
    let replaced (text: string) =
        text.EnumerateRunes() |> Seq.map (fun rune -> if rune.IsAscii then rune.ToString() else "?") |> String.concat ""

    let expected (message: DaemonMessage) =
        match message with
        | DaemonMessage.Initialize(ShardId shard, sequence, sub) -> DaemonMessage.Initialize(ShardId(replaced shard), sequence, sub)
        | DaemonMessage.ProcessRecords(records, behind) ->
            DaemonMessage.ProcessRecords(records |> Array.map (fun r -> { r with PartitionKey = replaced r.PartitionKey }), behind)
        | DaemonMessage.CheckpointReply(sequence, sub, error) ->
            DaemonMessage.CheckpointReply(
                Option.map replaced sequence,
                sub,
                error |> Option.map (fun e -> CheckpointError.OfName(replaced e.Name))
            )
        | other -> other

    Prop.forAll (Arb.fromGen daemonMessage) (fun message ->
        let bytes = Json.encodeDaemonMessage Json.DaemonCharset.PosixAscii message
        Array.forall (fun b -> b < 0x80uy) bytes && decodeBytes bytes = Ok(expected message))
    |> check 300

[<Fact>]
let ``a daemon line starts with its action, keeps every key and parses as standard JSON`` () =
    Prop.forAll (Arb.fromGen daemonMessage) (fun message ->
        use document = JsonDocument.Parse(encodeUtf8 message)
        let first = document.RootElement.EnumerateObject() |> Seq.head
        first.Name = "action" && first.Value.GetString() = message.Action)
    |> check 300

[<Fact>]
let ``child output is pure ASCII with no BOM, and a status has exactly action and responseFor`` () =
    Prop.forAll (Arb.fromGen childMessage) (fun message ->
        let line = Json.encodeChildMessage message
        use document = JsonDocument.Parse line
        let keys = document.RootElement.EnumerateObject() |> Seq.map _.Name |> List.ofSeq

        let keysRight =
            match message with
            | ChildMessage.Status responseFor ->
                keys = [ "action"; "responseFor" ]
                && document.RootElement.GetProperty("responseFor").GetString() = responseFor
            | ChildMessage.Checkpoint _ -> keys = [ "action"; "sequenceNumber"; "subSequenceNumber" ]

        line |> Seq.forall (fun c -> c < '\u0080') && not (line.StartsWith '\uFEFF') && keysRight)
    |> check 500

[<Fact>]
let ``non-ASCII in a child line is escaped as UTF-16 units`` () =
    Assert.Equal(
        """{"action":"status","responseFor":"\u00FC\u20AC\uD83D\uDE00\n\u0001"}""",
        Json.encodeChildMessage (ChildMessage.Status "ü€😀\n\u0001")
    )
