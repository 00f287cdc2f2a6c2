module Kcl.Core.Tests.JsonTests

open System
open System.Runtime.InteropServices
open System.Text
open System.Text.Json
open FsCheck
open FsCheck.FSharp
open Xunit
open Kcl.Core
open Kcl.Core.Tests.Generators

// ---- helpers ------------------------------------------------------------------------------------------------------

let private decodeBytes (bytes: byte[]) =
    Json.decodeDaemonMessage (ReadOnlySpan bytes)

let private decodeChildBytes (bytes: byte[]) =
    Json.decodeChildMessage (ReadOnlySpan bytes)

let private encodeUtf8 = Json.encodeDaemonMessage Json.DaemonCharset.Utf8
let private seqNo = SequenceNumber.parse

let private at (millis: int64) =
    Some(DateTimeOffset.FromUnixTimeMilliseconds millis)

let private A = "49590338271490256608559692538361571095921575989136588898"
let private B = "49590338271490256608559692538362780021741190618311294978"
let private C = "49590338271490256608559692538363988947560805247485001730"
let private K = "49590338271490256608559692540925702759324208523137515618"

let private record (data: byte[]) key sequence sub arrival =
    {
        Data = ReadOnlyMemory data
        PartitionKey = key
        SequenceNumber = seqNo sequence
        SubSequenceNumber = sub
        ApproximateArrivalTimestamp = arrival
    }

let private ascii (text: string) = Encoding.ASCII.GetBytes text
let private utf8 (text: string) = Encoding.UTF8.GetBytes text

/// The array a decoded payload lies in, and where.
let private segmentOf (data: ReadOnlyMemory<byte>) =
    match MemoryMarshal.TryGetArray data with
    | true, segment -> segment
    | false, _ -> failwith "the payload does not lie in an array"

let private expectError (expected: ProtocolError) (actual: Result<'T, ProtocolError>) =
    Assert.Equal(Error expected, actual)

let private describe (result: Result<'T, ProtocolError>) =
    match result with
    | Error error -> error.Describe()
    | Ok value -> sprintf "Ok %A" value

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
    [|
        record [| 0x00uy; 0xFFuy; 0xFEuy; 0x0Auy; 0x0Duy; 0x22uy |] "bin" A 0L (at 1700000000123L)
        record [| 0xF0uy; 0x9Fuy; 0x98uy; 0x80uy |] keyOfRecord2 B 0L (at 1700000000123L)
        record (utf8 "héllo wörld") "tab\tq\"bs\\" C 0L (at 1700000000123L)
        record [||] "empty" K 0L (at 1700000000123L)
    |]

let private daemonLines: (string * DaemonMessage) list =
    [
        """{"action":"initialize","shardId":"shardId-000000000000","sequenceNumber":"TRIM_HORIZON","subSequenceNumber":0}""",
        DaemonMessage.Initialize(ShardId "shardId-000000000000", Some(seqNo "TRIM_HORIZON"), Some 0L)
        """{"action":"initialize","shardId":"shardId-000000000001","sequenceNumber":"49590338271490256608559692538361571095921575989136588898","subSequenceNumber":3}""",
        DaemonMessage.Initialize(ShardId "shardId-000000000001", Some(seqNo A), Some 3L)
        """{"action":"initialize","shardId":"shardId-000000000002","sequenceNumber":null,"subSequenceNumber":null}""",
        DaemonMessage.Initialize(ShardId "shardId-000000000002", None, None)
        t04Batch,
        DaemonMessage.ProcessRecords(
            [|
                record (utf8 "hello") "pk-1" A 0L (at 1700000000123L)
                record (utf8 "world") "pk-2" B 0L (at 1700000000456L)
            |],
            Some 0L
        )
        """{"action":"checkpoint","sequenceNumber":"49590338271490256608559692538362780021741190618311294978","subSequenceNumber":0,"error":null}""",
        DaemonMessage.CheckpointReply(Some B, Some 0L, None)
        """{"action":"processRecords","records":[{"data":"b3JkZXItMQ==","partitionKey":"order","sequenceNumber":"49590338271490256608559692538361571095921575989136588898","approximateArrivalTimestamp":1700000001000,"subSequenceNumber":0,"action":"record"},{"data":"b3JkZXItMg==","partitionKey":"order","sequenceNumber":"49590338271490256608559692538362780021741190618311294978","approximateArrivalTimestamp":1700000001000,"subSequenceNumber":0,"action":"record"},{"data":"b3JkZXItMw==","partitionKey":"order","sequenceNumber":"49590338271490256608559692538363988947560805247485001730","approximateArrivalTimestamp":1700000002000,"subSequenceNumber":0,"action":"record"}],"millisBehindLatest":1500}""",
        DaemonMessage.ProcessRecords(
            [|
                record (utf8 "order-1") "order" A 0L (at 1700000001000L)
                record (utf8 "order-2") "order" B 0L (at 1700000001000L)
                record (utf8 "order-3") "order" C 0L (at 1700000002000L)
            |],
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
        """{"action":"processRecords","records":[],"millisBehindLatest":null}""",
        DaemonMessage.ProcessRecords([||], None)
        """{"action":"processRecords","records":[{"data":"YWI=","partitionKey":"agg-pk-1","sequenceNumber":"49590338271490256608559692540925702759324208523137515618","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":0,"action":"record"},{"data":"YWJj","partitionKey":"agg-pk-2","sequenceNumber":"49590338271490256608559692540925702759324208523137515618","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":1,"action":"record"},{"data":"bGFzdA==","partitionKey":"agg-pk-3","sequenceNumber":"49590338271490256608559692540925702759324208523137515618","approximateArrivalTimestamp":1700000000123,"subSequenceNumber":2,"action":"record"}],"millisBehindLatest":0}""",
        DaemonMessage.ProcessRecords(
            [|
                record (utf8 "ab") "agg-pk-1" K 0L (at 1700000000123L)
                record (utf8 "abc") "agg-pk-2" K 1L (at 1700000000123L)
                record (utf8 "last") "agg-pk-3" K 2L (at 1700000000123L)
            |],
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
        """{"action":"shutdown","reason":"LEASE_LOST"}""", DaemonMessage.Shutdown ShutdownReason.LeaseLost
    ]

let private childLines: (string * ChildMessage) list =
    [
        for action in ActionNames.all -> sprintf """{"action":"status","responseFor":"%s"}""" action, ChildMessage.Status action
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
            ChildMessage.Checkpoint(CheckpointTarget.At(SequenceNumber.shardEnd, None))
    ]

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
    let bytes =
        Json.encodeDaemonMessage
            Json.DaemonCharset.PosixAscii
            (DaemonMessage.ProcessRecords(t11Records "ключ-ü-€", Some 0L))

    Assert.Equal<byte>(utf8 (t11Batch.Replace("ключ-ü-€", "????-?-?")), bytes)
    Assert.Equal(Ok(DaemonMessage.ProcessRecords(t11Records "????-?-?", Some 0L)), decodeBytes bytes)

[<Fact>]
let ``a surrogate pair becomes a single question mark in a POSIX locale`` () =
    let message = DaemonMessage.Initialize(ShardId "a😀b", None, None)

    let text =
        Encoding.ASCII.GetString(Json.encodeDaemonMessage Json.DaemonCharset.PosixAscii message)

    Assert.Equal("""{"action":"initialize","shardId":"a?b","sequenceNumber":null,"subSequenceNumber":null}""", text)

[<Fact>]
let ``every child line in the transcripts is exactly what encodeChildMessage writes`` () =
    for line, message in childLines do
        Assert.Equal(line, Json.encodeChildMessage message)
        Assert.Equal(Ok message, Json.decodeChildLine line)

[<Fact>]
let ``control characters are escaped as Jackson escapes them, and slash and DEL are left alone`` () =
    let key = String [| for c in 0..0x1F -> char c |] + "/\u007F\"\\"
    let message = DaemonMessage.Initialize(ShardId key, None, None)
    let text = Encoding.UTF8.GetString(encodeUtf8 message)

    let expected =
        """\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007\b\t\n\u000B\f\r\u000E\u000F"""
        + """\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017\u0018\u0019\u001A\u001B\u001C\u001D\u001E\u001F"""
        + "/\u007F\\\"\\\\"

    Assert.Equal(
        sprintf """{"action":"initialize","shardId":"%s","sequenceNumber":null,"subSequenceNumber":null}""" expected,
        text
    )

    Assert.Equal(Ok message, decodeBytes (utf8 text))

// ---- round trips -------------------------------------------------------------------------------------------------

[<Fact>]
let ``every daemon message survives encoding and decoding untouched`` () =
    Prop.forAll (Arb.fromGen daemonMessage) (fun message -> decodeBytes (encodeUtf8 message) = Ok message)
    |> check 500

[<Fact>]
let ``every child message survives encoding and decoding untouched`` () =
    Prop.forAll (Arb.fromGen childMessage) (fun message ->
        Json.decodeChildLine (Json.encodeChildMessage message) = Ok message)
    |> check 500

[<Fact>]
let ``payloads, long digit strings and Unicode partition keys arrive exactly as sent`` () =
    Prop.forAll (Arb.fromGen (Gen.zip3 payload digitString unicodeString)) (fun (data, digits, key) ->
        let sent = record data key digits 7L None

        match decodeBytes (encodeUtf8 (DaemonMessage.ProcessRecords([| sent |], None))) with
        | Ok(DaemonMessage.ProcessRecords([| received |], None)) ->
            received.Data.Span.SequenceEqual(ReadOnlySpan data)
            && received.SequenceNumber.Value = digits
            && received.PartitionKey = key
        | _ -> false)
    |> check 300

[<Fact>]
let ``two sequence numbers are equal exactly when their digits are, however each was made`` () =
    // Up to 64 digits are packed as nibbles, longer ones kept as text: lengths around both edges, and leading zeros,
    // which a nibble of 0 must not hide.
    let digits =
        gen {
            let! length = Gen.oneof [ Gen.choose (1, 20); Gen.choose (55, 70); Gen.choose (1, 130) ]
            let! leadingZeros = Gen.choose (0, 3)
            let! rest = Gen.arrayOfLength length (Gen.elements [ '0' .. '9' ])
            return String('0', leadingZeros) + String rest
        }

    let ofUtf8 (text: string) =
        match decodeBytes (encodeUtf8 (DaemonMessage.ProcessRecords([| record [||] "k" text 0L None |], None))) with
        | Ok(DaemonMessage.ProcessRecords([| received |], None)) -> received.SequenceNumber
        | other -> failwithf "%A" other

    // b is often a itself, or a near miss: one digit changed, or one more leading zero.
    let pair =
        gen {
            let! a = digits
            let! position = Gen.choose (0, a.Length - 1)
            let changed = a.Remove(position, 1).Insert(position, string (char ((int a[position] - 47) % 10 + 48)))

            let! b =
                Gen.frequency
                    [
                        2, Gen.constant a
                        2, Gen.constant changed
                        1, Gen.constant ("0" + a)
                        2, digits
                        1, Gen.elements sentinelNames
                    ]

            return a, b
        }

    Prop.forAll (Arb.fromGen pair) (fun (a, b) ->
        let parsedA, decodedA, parsedB = seqNo a, ofUtf8 a, seqNo b

        parsedA.Value = a
        && decodedA.Value = a
        && decodedA.ToString() = a
        && parsedA = decodedA
        && parsedA.GetHashCode() = decodedA.GetHashCode()
        && (parsedA = parsedB) = (a = b)
        && (decodedA = parsedB) = (a = b)
        && decodedA.Sentinel.IsNone
        && parsedB.Value = b)
    |> check 1000

[<Fact>]
let ``a POSIX-locale daemon's line decodes to the message with each non-ASCII code point replaced`` () =
    let replaced (text: string) =
        text.EnumerateRunes()
        |> Seq.map (fun rune -> if rune.IsAscii then rune.ToString() else "?")
        |> String.concat ""

    let expected (message: DaemonMessage) =
        match message with
        | DaemonMessage.Initialize(ShardId shard, sequence, sub) ->
            DaemonMessage.Initialize(ShardId(replaced shard), sequence, sub)
        | DaemonMessage.ProcessRecords(records, behind) ->
            DaemonMessage.ProcessRecords(
                records
                |> Array.map (fun r ->
                    { r with
                        PartitionKey = replaced r.PartitionKey
                    }),
                behind
            )
        | DaemonMessage.CheckpointReply(sequence, sub, error) ->
            DaemonMessage.CheckpointReply(
                Option.map replaced sequence,
                sub,
                error |> Option.map (fun e -> CheckpointError.OfName(replaced e.Name))
            )
        | other -> other

    Prop.forAll (Arb.fromGen daemonMessage) (fun message ->
        let bytes = Json.encodeDaemonMessage Json.DaemonCharset.PosixAscii message

        Array.forall (fun b -> b < 0x80uy) bytes
        && decodeBytes bytes = Ok(expected message))
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

        line |> Seq.forall (fun c -> c < '\u0080')
        && not (line.StartsWith '\uFEFF')
        && keysRight)
    |> check 500

[<Fact>]
let ``non-ASCII in a child line is escaped as UTF-16 units`` () =
    Assert.Equal(
        """{"action":"status","responseFor":"\u00FC\u20AC\uD83D\uDE00\n\u0001"}""",
        Json.encodeChildMessage (ChildMessage.Status "ü€😀\n\u0001")
    )

// ---- large lines -------------------------------------------------------------------------------------------------

[<Fact>]
let ``a batch of 10,000 records decodes`` () =
    let records =
        Array.init 10_000 (fun i ->
            record
                (utf8 (sprintf "payload-%d" i))
                (sprintf "pk-%d" i)
                (A + string i)
                (int64 (i % 7))
                (at (1700000000000L + int64 i)))

    let message = DaemonMessage.ProcessRecords(records, Some 42L)
    Assert.Equal(Ok message, decodeBytes (encodeUtf8 message))

[<Fact>]
let ``a batch of ten 1 MiB records decodes, each payload its own array`` () =
    let random = Random 17

    let records =
        Array.init 10 (fun i ->
            record (Array.init (1 <<< 20) (fun _ -> byte (random.Next 256))) "big" (string (i + 1)) 0L None)

    let message = DaemonMessage.ProcessRecords(records, None)

    match decodeBytes (encodeUtf8 message) with
    | Ok(DaemonMessage.ProcessRecords(decoded, None) as received) ->
        Assert.Equal(message, received)

        let arrays =
            decoded
            |> Array.map (fun record ->
                let segment = segmentOf record.Data
                Assert.Equal(0, segment.Offset)
                Assert.Equal(segment.Array.Length, segment.Count)
                segment.Array)

        for i in 0 .. arrays.Length - 1 do
            for j in i + 1 .. arrays.Length - 1 do
                Assert.False(obj.ReferenceEquals(arrays[i], arrays[j]))
    | other -> Assert.Fail(sprintf "%A" other)

[<Fact>]
let ``decoding a line twice gives payload arrays that share nothing`` () =
    let first = Json.decodeDaemonLine t04Batch
    let second = Json.decodeDaemonLine t04Batch

    match first, second with
    | Ok(DaemonMessage.ProcessRecords(one, _)), Ok(DaemonMessage.ProcessRecords(two, _)) ->
        (MemoryMarshal.AsMemory one[0].Data).Span[0] <- 0uy
        Assert.Equal<byte>(utf8 "hello", two[0].Data.ToArray())
        Assert.False(obj.ReferenceEquals((segmentOf one[0].Data).Array, (segmentOf two[0].Data).Array))
    | other -> Assert.Fail(sprintf "%A" other)

[<Fact>]
let ``a 14 MB line decodes from text`` () =
    let data = Array.init 10_600_000 (fun i -> byte (i * 31))

    let message =
        DaemonMessage.ProcessRecords([| record data "huge" K 0L (at 1700000000123L) |], Some 0L)

    let line = Encoding.UTF8.GetString(encodeUtf8 message)
    Assert.True(line.Length > 14_000_000)
    Assert.Equal(Ok message, Json.decodeDaemonLine line)

// ---- what the policy accepts from the daemon ---------------------------------------------------------------------

[<Fact>]
let ``record nulls become empty data, an empty partition key, sub-sequence 0 and no arrival time`` () =
    let line =
        """{"action":"processRecords","records":[{"data":null,"partitionKey":null,"sequenceNumber":"1","approximateArrivalTimestamp":null,"subSequenceNumber":null,"action":"record"}],"millisBehindLatest":null}"""

    Assert.Equal(Ok(DaemonMessage.ProcessRecords([| record [||] "" "1" 0L None |], None)), Json.decodeDaemonLine line)

[<Fact>]
let ``a KCL 1.x record without action, subSequenceNumber or arrival time decodes, as does a batch without millisBehindLatest``
    ()
    =
    let line =
        """{"action":"processRecords","records":[{"data":"YWJj","partitionKey":"k","sequenceNumber":"12"}]}"""

    Assert.Equal(
        Ok(DaemonMessage.ProcessRecords([| record (utf8 "abc") "k" "12" 0L None |], None)),
        Json.decodeDaemonLine line
    )

[<Fact>]
let ``keys come in any order and unknown keys, however nested, are ignored`` () =
    let line =
        """ {"records":[{"action":"record","future":{"a":[1,{"b":null}]},"sequenceNumber":"5","data":"AP\/+Cg0i"}], "extra":[[["}"]]], "action":"processRecords"} """

    Assert.Equal(
        Ok(
            DaemonMessage.ProcessRecords(
                [| record [| 0x00uy; 0xFFuy; 0xFEuy; 0x0Auy; 0x0Duy; 0x22uy |] "" "5" 0L None |],
                None
            )
        ),
        Json.decodeDaemonLine line
    )

    Assert.Equal(
        Ok DaemonMessage.LeaseLost,
        Json.decodeDaemonLine """{"junk":{"x":"{"},"action":"leaseLost","n":1e999}"""
    )

[<Fact>]
let ``an initialize with null checkpoint fields is accepted, one without the sequenceNumber key is a daemon too old``
    ()
    =
    Assert.Equal(
        Ok(DaemonMessage.Initialize(ShardId "s", None, None)),
        Json.decodeDaemonLine """{"action":"initialize","shardId":"s","sequenceNumber":null}"""
    )

    let tooOld =
        Json.decodeDaemonLine """{"action":"initialize","shardId":"shardId-000000000000"}"""

    expectError ProtocolError.DaemonTooOld tooOld

    Assert.Equal(
        "the daemon is older than KCL 1.7.2 (its initialize has no sequenceNumber field); upgrade to KCL multilang 2.1 or later",
        describe tooOld
    )

[<Fact>]
let ``a legacy shutdown with a null, missing or unknown reason is an error naming the reason`` () =
    expectError
        (ProtocolError.UnknownShutdownReason None)
        (Json.decodeDaemonLine """{"action":"shutdown","reason":null}""")

    expectError (ProtocolError.UnknownShutdownReason None) (Json.decodeDaemonLine """{"action":"shutdown"}""")
    let unknown = Json.decodeDaemonLine """{"action":"shutdown","reason":"REQUESTED"}"""
    expectError (ProtocolError.UnknownShutdownReason(Some "REQUESTED")) unknown
    Assert.Equal("a legacy shutdown message has the unknown reason \"REQUESTED\"", describe unknown)

[<Fact>]
let ``an unknown action from a newer daemon is reported as such, whatever its fields`` () =
    let result =
        Json.decodeDaemonLine """{"action":"prepareCheckpoint","records":5,"sequenceNumber":{}}"""

    expectError (ProtocolError.UnknownAction "prepareCheckpoint") result
    Assert.Equal("unknown action \"prepareCheckpoint\"", describe result)
    expectError (ProtocolError.UnknownAction "Initialize") (Json.decodeDaemonLine """{"action":"Initialize"}""")

// ---- hostile input -----------------------------------------------------------------------------------------------

[<Fact>]
let ``a line that is not an object says what it is instead`` () =
    let nullLine = Json.decodeDaemonLine "null"
    expectError (ProtocolError.NotAnObject "null") nullLine
    Assert.Equal("expected a JSON object, found null", describe nullLine)
    expectError (ProtocolError.NotAnObject "an array") (Json.decodeDaemonLine "[1,2]")
    expectError (ProtocolError.NotAnObject "a number") (Json.decodeDaemonLine "42")
    expectError (ProtocolError.NotAnObject "a string") (Json.decodeDaemonLine "\"action\"")
    expectError (ProtocolError.NotAnObject "a boolean") (Json.decodeDaemonLine " true ")
    expectError (ProtocolError.NotAnObject "an array") (Json.decodeDaemonLine (String('[', 10_000)))

[<Fact>]
let ``malformed JSON, deep nesting and trailing content are malformed lines`` () =
    let malformed line =
        match Json.decodeDaemonLine line with
        | Error(ProtocolError.MalformedJson _) -> ()
        | other -> Assert.Fail(sprintf "%s -> %A" line other)

    malformed ""
    malformed "   "
    malformed "{"
    malformed "hello"
    malformed "{'action':'leaseLost'}"
    malformed """{"action":"leaseLost",}"""
    malformed """{"action":"leaseLost"} trailing"""
    malformed """{"action":"leaseLost"}{"action":"leaseLost"}"""
    malformed """{"action":"leaseLost" /* c */}"""

    malformed (
        """{"action":"leaseLost","x":"""
        + String('[', 10_000)
        + String(']', 10_000)
        + "}"
    )

    malformed "\uFEFF{\"action\":\"leaseLost\"}"
    Assert.Equal(Ok DaemonMessage.LeaseLost, Json.decodeDaemonLine "{\"action\":\"leaseLost\"}\r")

[<Fact>]
let ``a missing, null or non-string action is its own error`` () =
    let missing = Json.decodeDaemonLine """{"shardId":"s"}"""
    expectError (ProtocolError.MissingField("", "action")) missing
    Assert.Equal("the required field \"action\" is missing or null", describe missing)
    expectError (ProtocolError.MissingField("", "action")) (Json.decodeDaemonLine """{"action":null}""")

    expectError
        (ProtocolError.WrongType("", "action", "a string", "a number"))
        (Json.decodeDaemonLine """{"action":5}""")

    expectError
        (ProtocolError.WrongType("", "action", "a string", "an object"))
        (Json.decodeDaemonLine """{"action":{}}""")

[<Fact>]
let ``fields of the wrong JSON type name the field, the expected type and the found one`` () =
    let pr = "processRecords"

    expectError
        (ProtocolError.WrongType(pr, "records", "an array", "an object"))
        (Json.decodeDaemonLine """{"action":"processRecords","records":{}}""")

    expectError
        (ProtocolError.MissingField(pr, "records"))
        (Json.decodeDaemonLine """{"action":"processRecords","records":null}""")

    expectError (ProtocolError.MissingField(pr, "records")) (Json.decodeDaemonLine """{"action":"processRecords"}""")

    expectError
        (ProtocolError.WrongType(pr, "records[1]", "an object", "a number"))
        (Json.decodeDaemonLine """{"action":"processRecords","records":[{"sequenceNumber":"1"},7]}""")

    expectError
        (ProtocolError.WrongType(pr, "records[0].subSequenceNumber", "an integer or null", "a string"))
        (Json.decodeDaemonLine
            """{"action":"processRecords","records":[{"sequenceNumber":"1","subSequenceNumber":"5"}]}""")

    expectError
        (ProtocolError.WrongType(pr, "records[0].data", "a base64 string or null", "an array"))
        (Json.decodeDaemonLine """{"action":"processRecords","records":[{"sequenceNumber":"1","data":[1]}]}""")

    expectError
        (ProtocolError.WrongType("initialize", "shardId", "a string or null", "a number"))
        (Json.decodeDaemonLine """{"action":"initialize","shardId":1,"sequenceNumber":null}""")

    expectError
        (ProtocolError.WrongType("checkpoint", "error", "a string or null", "a boolean"))
        (Json.decodeDaemonLine
            """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null,"error":false}""")

    let wrong =
        Json.decodeDaemonLine """{"action":"initialize","shardId":"s","sequenceNumber":"1","subSequenceNumber":"5"}"""

    expectError (ProtocolError.WrongType("initialize", "subSequenceNumber", "an integer or null", "a string")) wrong

    Assert.Equal(
        "in \"initialize\", the field \"subSequenceNumber\" must be an integer or null but is a string",
        describe wrong
    )

[<Fact>]
let ``required fields that are absent are missing fields`` () =
    expectError
        (ProtocolError.MissingField("initialize", "shardId"))
        (Json.decodeDaemonLine """{"action":"initialize","sequenceNumber":"1"}""")

    expectError
        (ProtocolError.MissingField("initialize", "shardId"))
        (Json.decodeDaemonLine """{"action":"initialize","shardId":null,"sequenceNumber":"1"}""")

    expectError
        (ProtocolError.MissingField("processRecords", "records[0].sequenceNumber"))
        (Json.decodeDaemonLine """{"action":"processRecords","records":[{"data":"","sequenceNumber":null}]}""")

[<Fact>]
let ``numbers that are not 64-bit integers and timestamps outside DateTimeOffset are invalid values`` () =
    let invalid action field line =
        match Json.decodeDaemonLine line with
        | Error(ProtocolError.InvalidValue(a, f, _)) when a = action && f = field -> ()
        | other -> Assert.Fail(sprintf "%s -> %A" line other)

    let sub value =
        sprintf """{"action":"initialize","shardId":"s","sequenceNumber":"1","subSequenceNumber":%s}""" value

    for value in [ "1e30"; "99999999999999999999"; "-99999999999999999999"; "1.5"; "1E2" ] do
        invalid "initialize" "subSequenceNumber" (sub value)

    Assert.Equal(
        Error(
            ProtocolError.InvalidValue("initialize", "subSequenceNumber", "1e30 is not an integer in the 64-bit range")
        ),
        Json.decodeDaemonLine (sub "1e30")
    )

    Assert.Equal(
        Ok(DaemonMessage.Initialize(ShardId "s", Some(seqNo "1"), Some Int64.MinValue)),
        Json.decodeDaemonLine (sub "-9223372036854775808")
    )

    invalid
        "processRecords"
        "millisBehindLatest"
        """{"action":"processRecords","records":[],"millisBehindLatest":9223372036854775808}"""

    let arrival millis =
        sprintf
            """{"action":"processRecords","records":[{"sequenceNumber":"1","approximateArrivalTimestamp":%s}]}"""
            millis

    invalid "processRecords" "records[0].approximateArrivalTimestamp" (arrival "253402300800000")
    invalid "processRecords" "records[0].approximateArrivalTimestamp" (arrival "-62135596800001")
    let latest = DateTimeOffset.MaxValue.Subtract(TimeSpan.FromTicks 9999L)

    Assert.Equal(
        Ok(DaemonMessage.ProcessRecords([| record [||] "" "1" 0L (Some latest) |], None)),
        Json.decodeDaemonLine (arrival "253402300799999")
    )

[<Fact>]
let ``invalid base64 and strings that are not sequence numbers are invalid values`` () =
    let data value =
        sprintf """{"action":"processRecords","records":[{"sequenceNumber":"1","data":%s}]}""" value

    for value in [ "\"!!!!\""; "\"YWI\""; "\"YW=I\""; "\"a\"" ] do
        match Json.decodeDaemonLine (data value) with
        | Error(ProtocolError.InvalidValue("processRecords", "records[0].data", _)) -> ()
        | other -> Assert.Fail(sprintf "%s -> %A" value other)

    // .NET's decoder skips whitespace inside base64, as Jackson's does; the daemon never writes any.
    Assert.Equal(
        Ok(DaemonMessage.ProcessRecords([| record (utf8 "hello") "" "1" 0L None |], None)),
        Json.decodeDaemonLine (data "\"aGVs\\nbG8=\\r\\n\"")
    )

    let sequence value =
        sprintf """{"action":"initialize","shardId":"s","sequenceNumber":%s}""" value

    for value in [ "\"\""; "\"12a\""; "\"-1\""; "\" 1\""; "\"trim_horizon\""; "\"１２\"" ] do
        match Json.decodeDaemonLine (sequence value) with
        | Error(ProtocolError.InvalidValue("initialize", "sequenceNumber", _)) -> ()
        | other -> Assert.Fail(sprintf "%s -> %A" value other)

    expectError
        (ProtocolError.WrongType("initialize", "sequenceNumber", "a string or null", "a number"))
        (Json.decodeDaemonLine (sequence "4959"))

// The decoder reads the usual payload with its own exact-length decode and leaves everything else to Utf8JsonReader;
// either way a record's data must be what the reader's TryGetBytesFromBase64 makes of the same JSON string.
[<Fact>]
let ``record data decodes exactly as Utf8JsonReader's own base64 decoder would`` () =
    let damage =
        Gen.elements [ ""; " "; "    "; "AA  "; "="; "=="; "A"; "\\n"; "\\u0041"; "!"; "\\/" ]

    let text =
        gen {
            let! bytes = payload
            let encoded = Convert.ToBase64String bytes
            let! cut = Gen.choose (0, encoded.Length)
            let! inserted = damage
            let! keep = Gen.elements [ true; true; false ]
            return if keep then encoded else encoded.Insert(cut, inserted)
        }

    Prop.forAll (Arb.fromGen text) (fun value ->
        let json = "\"" + value + "\""
        let mutable reader = Utf8JsonReader(ReadOnlySpan(utf8 json))
        reader.Read() |> ignore

        let expected =
            match reader.TryGetBytesFromBase64() with
            | true, bytes -> Some bytes
            | false, _ -> None

        let line =
            sprintf """{"action":"processRecords","records":[{"sequenceNumber":"1","data":%s}]}""" json

        match expected, Json.decodeDaemonLine line with
        | Some bytes, Ok(DaemonMessage.ProcessRecords([| decoded |], None)) ->
            decoded.Data.Span.SequenceEqual(ReadOnlySpan bytes)
        | None, Error(ProtocolError.InvalidValue("processRecords", "records[0].data", _)) -> true
        | _ -> false)
    |> check 2000

[<Fact>]
let ``every prefix of a valid line is an error, never an exception`` () =
    for line in [ t04Batch; t11Batch; fst daemonLines.Head ] do
        let bytes = utf8 line

        for length in 0 .. bytes.Length - 1 do
            Assert.True(
                isError (Json.decodeDaemonMessage (ReadOnlySpan(bytes, 0, length))),
                sprintf "prefix of %d bytes" length
            )

[<Fact>]
let ``random bytes never make the decoders throw`` () =
    Prop.forAll (Arb.fromGen payload) (fun bytes ->
        match decodeBytes bytes, decodeChildBytes bytes with
        | (Ok _ | Error _), (Ok _ | Error _) -> true)
    |> check 1000

// Token soup that is often nearly valid, so the decoders' deeper paths see hostile values, not just syntax errors.
let private jsonish: Gen<string> =
    let token =
        Gen.elements
            [
                "{"
                "}"
                "["
                "]"
                ":"
                ","
                "null"
                "true"
                "0"
                "-1"
                "1.5"
                "1e30"
                "99999999999999999999"
                "\"action\""
                "\"initialize\""
                "\"processRecords\""
                "\"checkpoint\""
                "\"status\""
                "\"shutdown\""
                "\"records\""
                "\"data\""
                "\"sequenceNumber\""
                "\"subSequenceNumber\""
                "\"responseFor\""
                "\"reason\""
                "\"shardId\""
                "\"approximateArrivalTimestamp\""
                "\"12\""
                "\"YWJj\""
                "\"!!\""
                "\"\\ud800\""
                "\"\\u0000\""
            ]

    Gen.listOf token |> Gen.map (String.concat "")

[<Fact>]
let ``JSON-like token soup never makes the decoders throw`` () =
    Prop.forAll (Arb.fromGen jsonish) (fun line ->
        match Json.decodeDaemonLine line, Json.decodeChildLine line with
        | (Ok _ | Error _), (Ok _ | Error _) -> true)
    |> check 2000

[<Fact>]
let ``invalid UTF-8 and lone surrogate escapes are errors, not exceptions`` () =
    let withKey (key: byte[]) =
        Array.concat
            [
                utf8 "{\"action\":\"processRecords\",\"records\":[{\"sequenceNumber\":\"1\",\"partitionKey\":\""
                key
                utf8 "\"}]}"
            ]

    Assert.True(isError (decodeBytes (withKey [| 0xC3uy; 0x28uy |])))
    Assert.True(isError (decodeBytes (withKey [| 0xFFuy |])))

    Assert.True(
        isError (decodeBytes (Array.concat [ utf8 "{\""; [| 0xFFuy |]; utf8 "\":1,\"action\":\"leaseLost\"}" ]))
    )

    match
        Json.decodeDaemonLine
            """{"action":"processRecords","records":[{"sequenceNumber":"1","partitionKey":"\ud800"}]}"""
    with
    | Error(ProtocolError.InvalidValue("processRecords", "records[0].partitionKey", _)) -> ()
    | other -> Assert.Fail(sprintf "%A" other)

// ---- the daemon's reading of child lines (PROTOCOL.md §3.3) ------------------------------------------------------

[<Fact>]
let ``child lines the daemon would skip are errors`` () =
    let error line =
        Assert.True(isError (Json.decodeChildLine line), line)

    expectError
        (ProtocolError.InvalidValue("status", "extra", "not a property of this message; the daemon would skip the line"))
        (Json.decodeChildLine """{"action":"status","responseFor":"initialize","extra":1}""")

    expectError
        (ProtocolError.InvalidValue(
            "checkpoint",
            "checkpoint",
            "not a property of this message; the daemon would skip the line"
        ))
        (Json.decodeChildLine """{"action":"checkpoint","checkpoint":"123"}""")

    expectError
        (ProtocolError.UnknownAction "Status")
        (Json.decodeChildLine """{"action":"Status","responseFor":"initialize"}""")

    expectError
        (ProtocolError.UnknownAction "prepareCheckpoint")
        (Json.decodeChildLine """{"action":"prepareCheckpoint"}""")

    expectError
        (ProtocolError.MissingField("", "action"))
        (Json.decodeChildLine """{"Action":"status","responseFor":"x"}""")

    expectError (ProtocolError.NotAnObject "null") (Json.decodeChildLine "null")
    expectError (ProtocolError.NotAnObject "an array") (Json.decodeChildLine "[1,2]")
    expectError (ProtocolError.MissingField("status", "responseFor")) (Json.decodeChildLine """{"action":"status"}""")

    expectError
        (ProtocolError.MissingField("status", "responseFor"))
        (Json.decodeChildLine """{"action":"status","responseFor":null}""")

    expectError
        (ProtocolError.UnknownAction "initialize")
        (Json.decodeChildLine """{"action":"initialize","shardId":"s"}""")

    error "hello"
    error "   "
    error "{'action':'status','responseFor':'initialize'}"
    error """{"action":"checkpoint","sequenceNumber":"abc"}"""
    error """{"action":"checkpoint","sequenceNumber":true}"""
    error """{"action":"checkpoint","sequenceNumber":{}}"""
    error """{"action":"checkpoint","sequenceNumber":"1","subSequenceNumber":1e30}"""
    error """{"action":"checkpoint","sequenceNumber":"1","subSequenceNumber":"x"}"""
    error """{"action":"checkpoint","sequenceNumber":"1","subSequenceNumber":[0]}"""

[<Fact>]
let ``child lines the daemon accepts decode, with Jackson's coercions`` () =
    let status = Ok(ChildMessage.Status "initialize")
    Assert.Equal(status, Json.decodeChildLine """{"action":"status","responseFor":"initialize"} trailing""")
    Assert.Equal(status, Json.decodeChildLine """{"action":"status","responseFor":"initialize"}{"action":"x"}""")
    Assert.Equal(status, Json.decodeChildLine """  {"responseFor":"initialize" , "action":"status"}  """)

    let checkpointAt sequence sub =
        Ok(ChildMessage.Checkpoint(CheckpointTarget.At(seqNo sequence, sub)))

    Assert.Equal(
        checkpointAt "12345" (Some 0L),
        Json.decodeChildLine """{"action":"checkpoint","sequenceNumber":12345,"subSequenceNumber":"0"}"""
    )

    Assert.Equal(
        checkpointAt "7" (Some 1L),
        Json.decodeChildLine """{"action":"checkpoint","sequenceNumber":"7","subSequenceNumber":1.5}"""
    )

    Assert.Equal(
        checkpointAt "7" None,
        Json.decodeChildLine """{"action":"checkpoint","sequenceNumber":"7","error":"x"}"""
    )

    let lastDelivered = Ok(ChildMessage.Checkpoint CheckpointTarget.LastDelivered)
    Assert.Equal(lastDelivered, Json.decodeChildLine """{"action":"checkpoint"}""")

    Assert.Equal(
        lastDelivered,
        Json.decodeChildLine """{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":5}"""
    )

[<Fact>]
let ``a line in many pieces decodes as it does in one`` () =
    let records =
        Array.init 40 (fun n ->
            {
                Data = ReadOnlyMemory(Array.init (300 + n) byte)
                PartitionKey = sprintf "pk-%d" n
                SequenceNumber =
                    SequenceNumber.parse ("4959033827149025660855969253836157109592157598913" + n.ToString "D7")
                SubSequenceNumber = int64 n
                ApproximateArrivalTimestamp = Some(DateTimeOffset.FromUnixTimeMilliseconds(1700000000000L + int64 n))
            })

    let line =
        Json.encodeDaemonMessage Json.DaemonCharset.Utf8 (DaemonMessage.ProcessRecords(records, Some 42L))

    let whole = Json.decodeDaemonMessage (ReadOnlySpan line)

    for pieceSize in [ 1; 13; 4096 ] do
        let pieces = line |> Array.chunkBySize pieceSize
        let first = Kcl.Core.LineSegment(ReadOnlyMemory pieces[0], 0L)
        let mutable last = first

        for piece in pieces[1..] do
            last <- last.Append(ReadOnlyMemory piece)

        let inPieces =
            Json.decodeDaemonSequence (Buffers.ReadOnlySequence<byte>(first, 0, last, last.Memory.Length))

        match whole, inPieces with
        | Ok(DaemonMessage.ProcessRecords(expected, behind)), Ok(DaemonMessage.ProcessRecords(actual, actualBehind)) ->
            Assert.Equal(behind, actualBehind)
            Assert.Equal<Record>(expected, actual)
        | other -> failwithf "unexpected %A" other

// ---- processRecords in the daemon's own layout ----------------------------------------------------------------------

let private readerOnly (bytes: byte[]) =
    Json.decodeDaemonByReader (Buffers.ReadOnlySequence<byte> bytes)

// The line as the line reader hands on one longer than its buffer: a chain of pieces of `size` bytes.
let private inPieces (size: int) (line: byte[]) =
    let first = Kcl.Core.LineSegment(ReadOnlyMemory(line, 0, min size line.Length), 0L)
    let mutable last = first

    for start in size..size .. line.Length - 1 do
        last <- last.Append(ReadOnlyMemory(line, start, min size (line.Length - start)))

    Buffers.ReadOnlySequence<byte>(first, 0, last, last.Memory.Length)

// Keys the daemon writes without an escape: printable ASCII but for the quote and the backslash, and non-ASCII text.
let private plainKey =
    [ ' ' .. '~' ]
    |> List.filter (fun c -> c <> '"' && c <> '\\')
    |> List.map string
    |> List.append [ "é"; "日"; "😀" ]
    |> Gen.elements
    |> Gen.listOf
    |> Gen.map (String.concat "")

let private plainBatch =
    gen {
        let! records =
            Gen.arrayOf (
                Gen.map3
                    (fun (r: Record) key digits ->
                        { r with
                            PartitionKey = key
                            SequenceNumber = SequenceNumber.parse digits
                        })
                    Generators.record
                    plainKey
                    digitString
            )
            |> Gen.scaleSize (fun size -> size / 5)

        let! behind = Gen.optionOf int64Value
        return DaemonMessage.ProcessRecords(records, behind)
    }

// Printable ASCII that needs no escape in JSON.
let private printable =
    [ ' ' .. '~' ] |> List.filter (fun c -> c <> '"' && c <> '\\') |> Gen.elements |> Gen.arrayOf |> Gen.map String

// An `initialize` as the daemon writes it: a printable ASCII shard id, digits, a sentinel or null, and a sub-sequence
// number or null.
let private plainInitialize =
    Gen.map3
        (fun shard sequence sub -> DaemonMessage.Initialize(ShardId shard, sequence, sub))
        (Gen.oneof [ printable; Gen.map (sprintf "shardId-%012d") (Gen.choose (0, Int32.MaxValue)) ])
        (Gen.optionOf sequenceNumber)
        (Gen.optionOf int64Value)

/// Whether a message encoded in the daemon's layout is read by hand, to the message the reader gives.
let private readByHandAsTheReaderReads (message: DaemonMessage) =
    let bytes = encodeUtf8 message
    JsonDecode.tryDecodeDaemonLayout (ReadOnlySpan bytes) = ValueSome message && readerOnly bytes = Ok message

[<Fact>]
let ``an initialize in the daemon's layout is read by hand, to the message the reader gives`` () =
    Prop.forAll (Arb.fromGen plainInitialize) readByHandAsTheReaderReads |> check 300

// A checkpoint's reply as the daemon writes it: the sequence number it echoes (digits, or any printable ASCII), a
// sub-sequence number and an error (a known one, or any printable ASCII name), each possibly null.
let private plainCheckpointReply =
    Gen.map3
        (fun sequence sub error -> DaemonMessage.CheckpointReply(sequence, sub, error))
        (Gen.optionOf (Gen.oneof [ digitString; printable ]))
        (Gen.optionOf int64Value)
        (Gen.optionOf (Gen.oneof [ Gen.elements knownCheckpointErrors; Gen.map CheckpointError.OfName printable ]))

[<Fact>]
let ``a checkpoint's reply in the daemon's layout is read by hand, to the message the reader gives`` () =
    Prop.forAll (Arb.fromGen plainCheckpointReply) readByHandAsTheReaderReads |> check 300

[<Fact>]
let ``the messages with no field but their action are read by hand, to the message the reader gives`` () =
    for message in [ DaemonMessage.ShardEnded; DaemonMessage.LeaseLost; DaemonMessage.ShutdownRequested ] do
        Assert.True(readByHandAsTheReaderReads message, string message)

[<Fact>]
let ``an initialize the hand reading cannot take is the reader's, which names what is wrong`` () =
    let line shard sequence =
        utf8 (
            "{\"action\":\"initialize\",\"shardId\":"
            + shard
            + ",\"sequenceNumber\":"
            + sequence
            + ",\"subSequenceNumber\":0}"
        )

    let unreadable =
        [ line "null" "null"; line "\"s\"" "\"12x\""; line "\"s\\u0041\"" "null"; line "\"é\"" "\"LATEST\"" ]

    for bytes in unreadable do
        Assert.Equal(ValueNone, JsonDecode.tryDecodeDaemonLayout (ReadOnlySpan bytes))

    Assert.Equal(Error(ProtocolError.MissingField("initialize", "shardId")), decodeBytes (line "null" "null"))

    match decodeBytes (line "\"s\"" "\"12x\"") with
    | Error(ProtocolError.InvalidValue("initialize", "sequenceNumber", _)) -> ()
    | other -> failwithf "unexpected %A" other

    Assert.Equal(Ok(DaemonMessage.Initialize(ShardId "sA", None, Some 0L)), decodeBytes (line "\"s\\u0041\"" "null"))

[<Fact>]
let ``a batch in the daemon's layout is read by hand, to the records the reader gives`` () =
    Prop.forAll (Arb.fromGen plainBatch) readByHandAsTheReaderReads |> check 300

[<Fact>]
let ``records that arrived in the same millisecond share their arrival time, and every record keeps its own`` () =
    // Arrival times in runs, as the records of one PutRecords call or one KPL aggregate have them, and now and then
    // none.
    let batch =
        gen {
            let time = Gen.frequency [ 5, Gen.map Some (Gen.choose64 (0L, 5L)); 1, Gen.constant None ]
            let run = Gen.zip time (Gen.choose (1, 4)) |> Gen.map (fun (time, n) -> List.replicate n time)
            let! times = Gen.listOf run |> Gen.map List.concat

            let records =
                times
                |> List.mapi (fun i time ->
                    record [| byte i |] "k" (A + string i) 0L (time |> Option.bind (fun t -> at (1700000000000L + t))))
                |> Array.ofList

            return DaemonMessage.ProcessRecords(records, Some 0L)
        }

    Prop.forAll (Arb.fromGen batch) (fun message ->
        let bytes = encodeUtf8 message

        match JsonDecode.tryDecodeDaemonLayout (ReadOnlySpan bytes) with
        | ValueSome(DaemonMessage.ProcessRecords(records, _) as decoded) ->
            decoded = message
            && readerOnly bytes = Ok message
            && records
               |> Array.pairwise
               |> Array.forall (fun (a, b) ->
                   a.ApproximateArrivalTimestamp.IsNone
                   || a.ApproximateArrivalTimestamp <> b.ApproximateArrivalTimestamp
                   || obj.ReferenceEquals(a.ApproximateArrivalTimestamp, b.ApproximateArrivalTimestamp))
        | _ -> false)
    |> check 300

// Bytes that end a token, start another, or make text JSON or UTF-8 refuses.
let private disruptive =
    [ " "; "\""; "\\"; "0"; "-"; "."; "e"; ","; "}"; "]"; "="; "\u0001"; "null"; "\\u0041"; "007"; "1.5"; "1e3" ]
    |> List.map Encoding.UTF8.GetBytes
    |> List.append [ [| 0xC3uy |]; [| 0xFFuy |]; [| 0xEDuy; 0xA0uy; 0x80uy |] ]

/// A daemon line, mostly in the daemon's layout, with one edit at a random place: a disruptive byte inserted or put
/// in place of one, a byte removed, the line cut there, or something appended.
let private editedLine =
    gen {
        let! message = Gen.oneof [ plainBatch; plainInitialize; plainCheckpointReply; daemonMessage ]
        let bytes = encodeUtf8 message
        let! position = Gen.choose (0, bytes.Length - 1)
        let! inserted = Gen.elements disruptive
        let before, after = Array.splitAt position bytes

        return!
            Gen.elements
                [
                    Array.concat [ before; inserted; after ]
                    Array.concat [ before; inserted; Array.tail after ]
                    Array.append before (Array.tail after)
                    before
                    Array.append bytes inserted
                ]
    }

[<Fact>]
let ``a line that leaves the daemon's layout anywhere decodes exactly as the reader decodes it`` () =
    Prop.forAll (Arb.fromGen editedLine) (fun bytes -> decodeBytes bytes = readerOnly bytes)
    |> check 3000

[<Fact>]
let ``a batch in the daemon's layout that came in pieces is read by hand too, records across pieces included`` () =
    let inPiecesOfAnySize =
        Gen.zip plainBatch (Gen.frequency [ 3, Gen.choose (1, 64); 3, Gen.choose (65, 4096); 1, Gen.constant 65536 ])

    Prop.forAll (Arb.fromGen inPiecesOfAnySize) (fun (message, size) ->
        let pieces = inPieces size (encodeUtf8 message)

        JsonDecode.tryDecodeDaemonLayoutInPieces pieces = ValueSome message
        && Json.decodeDaemonSequence pieces = Ok message)
    |> check 300

/// Decodes the line as the line reader hands it on in pieces of `size` bytes: each full piece as it comes, with the
/// line so far, then the whole line.
let private decodedWhileRead (size: int) (line: byte[]) =
    let batch = JsonDecode.BatchInPieces()

    for full in 1 .. line.Length / size do
        batch.Advance(inPieces size line[.. full * size - 1])

    Json.decodeDaemonPieces batch (inPieces size line)

[<Fact>]
let ``a batch decoded piece by piece while its line is read is the batch the line holds`` () =
    let inPiecesOfAnySize =
        Gen.zip plainBatch (Gen.frequency [ 3, Gen.choose (1, 64); 3, Gen.choose (65, 4096); 1, Gen.constant 65536 ])

    Prop.forAll (Arb.fromGen inPiecesOfAnySize) (fun (message, size) ->
        decodedWhileRead size (encodeUtf8 message) = Ok message)
    |> check 300

[<Fact>]
let ``a line decoded piece by piece that leaves the daemon's layout anywhere decodes exactly as the reader decodes it`` () =
    let edited = Gen.zip editedLine (Gen.choose (1, 2048))

    Prop.forAll (Arb.fromGen edited) (fun (bytes, size) ->
        decodedWhileRead size bytes = Json.decodeDaemonByReader (inPieces size bytes))
    |> check 2000

[<Fact>]
let ``the records wholly inside the pieces read so far are decoded before the line ends`` () =
    let records = Array.init 100 (fun i -> record (Array.create 60 (byte i)) "key" A 0L None)
    let line = encodeUtf8 (DaemonMessage.ProcessRecords(records, Some 0L))
    let recordEnd = utf8 ",\"action\":\"record\"}"

    // Where each record's text ends in the line.
    let ends =
        [ for start in 0 .. line.Length - recordEnd.Length do
              if line.AsSpan(start).StartsWith recordEnd then
                  start + recordEnd.Length ]

    Assert.Equal(100, ends.Length)

    // Pieces that end inside a record, just after one, and just after a comma.
    for size in [ 1000; ends[0]; ends[0] + 1 ] do
        let batch = JsonDecode.BatchInPieces()

        for full in 1..5 do
            batch.Advance(inPieces size line[.. full * size - 1])
            Assert.Equal(ends |> List.filter (fun e -> e <= full * size) |> List.length, batch.Decoded)

        match Json.decodeDaemonPieces batch (inPieces size line) with
        | Ok(DaemonMessage.ProcessRecords(decoded, _)) -> Assert.Equal<Record>(records, decoded)
        | other -> failwithf "unexpected %A" other

[<Fact>]
let ``a line in pieces that leaves the daemon's layout anywhere decodes exactly as the reader decodes it`` () =
    let edited =
        Gen.map2 (fun bytes size -> inPieces size bytes) editedLine (Gen.choose (1, 2048))

    Prop.forAll (Arb.fromGen edited) (fun pieces -> Json.decodeDaemonSequence pieces = Json.decodeDaemonByReader pieces)
    |> check 2000

[<Fact>]
let ``numbers JSON forbids, text it refuses and arrival times out of range leave the line to the reader`` () =
    let line arrival sub behind =
        utf8 (
            "{\"action\":\"processRecords\",\"records\":[{\"data\":\"aGk=\",\"partitionKey\":\"k\",\"sequenceNumber\":\""
            + A
            + "\",\"approximateArrivalTimestamp\":"
            + arrival
            + ",\"subSequenceNumber\":"
            + sub
            + ",\"action\":\"record\"}],\"millisBehindLatest\":"
            + behind
            + "}"
        )

    Assert.True((JsonDecode.tryDecodeDaemonLayout (ReadOnlySpan(line "1700000000123" "0" "0"))).IsSome)
    Assert.True((JsonDecode.tryDecodeDaemonLayout (ReadOnlySpan(line "null" "null" "null"))).IsSome)
    Assert.True((JsonDecode.tryDecodeDaemonLayout (ReadOnlySpan(line "-0" "-5" "-0"))).IsSome)

    // Up to 18 digits are summed as they are read; from 19 on, the parser checks the range.
    for edge in [ "999999999999999999"; "-999999999999999999"; "1000000000000000000"; "9223372036854775807"
                  "-9223372036854775808"; "-1000000000000000000" ] do
        let bytes = line "1" edge edge

        match JsonDecode.tryDecodeDaemonLayout (ReadOnlySpan bytes) with
        | ValueSome(DaemonMessage.ProcessRecords([| decoded |], Some behind) as message) ->
            Assert.Equal(Int64.Parse edge, decoded.SubSequenceNumber)
            Assert.Equal(Int64.Parse edge, behind)
            Assert.Equal(readerOnly bytes, Ok message)
        | other -> failwithf "%s: %A" edge other

    let outsideTheLayout (bytes: byte[]) =
        Assert.True((JsonDecode.tryDecodeDaemonLayout (ReadOnlySpan bytes)).IsNone, Encoding.UTF8.GetString bytes)
        Assert.Equal(readerOnly bytes, decodeBytes bytes)

    for bad in [ "007"; "1.5"; "1e3"; "+1"; "9223372036854775808"; "-9223372036854775809"; "" ] do
        for bytes in [ line bad "0" "0"; line "1" bad "0"; line "1" "0" bad ] do
            outsideTheLayout bytes

    // JSON forbids a raw control character in a string, and UTF-8 a lone surrogate; both are the reader's to refuse.
    for key in [ [| 0x01uy |]; [| 0x1Fuy |]; [| 0xEDuy; 0xA0uy; 0x80uy |]; [| 0xC3uy |] ] do
        let bytes = line "1" "0" "0"
        let at = (Encoding.ASCII.GetString bytes).IndexOf "\"partitionKey\":\"k\"" + "\"partitionKey\":\"".Length
        let edited = Array.concat [ bytes[.. at - 1]; key; bytes[at + 1 ..] ]
        outsideTheLayout edited
        Assert.True(isError (decodeBytes edited))

    // One millisecond after DateTimeOffset.MaxValue: an Int64, but no arrival time.
    outsideTheLayout (line "253402300800000" "0" "0")
    Assert.True(isError (decodeBytes (line "253402300800000" "0" "0")))

// ---- where decoded payloads lie -----------------------------------------------------------------------------------

let private batchOfSizes (sizes: int list) =
    let random = Random 23

    let records =
        sizes
        |> List.mapi (fun i size ->
            record (Array.init size (fun _ -> byte (random.Next 256))) "k" (A + string i) 0L (at 1700000000000L))
        |> Array.ofList

    DaemonMessage.ProcessRecords(records, Some 0L)

/// The records of a batch decoded by hand from one span, and from pieces of 4 KiB.
let private decodedBothWays (message: DaemonMessage) =
    let bytes = encodeUtf8 message

    [
        JsonDecode.tryDecodeDaemonLayout (ReadOnlySpan bytes)
        JsonDecode.tryDecodeDaemonLayoutInPieces (inPieces 4096 bytes)
    ]
    |> List.map (function
        | ValueSome(DaemonMessage.ProcessRecords(records, _) as decoded) ->
            Assert.Equal(message, decoded)
            records
        | other -> failwithf "not read by hand: %A" other)

[<Fact>]
let ``a batch's payloads lie side by side in blocks of 64 KiB that neighbouring records share`` () =
    for records in decodedBothWays (batchOfSizes (List.replicate 500 1024)) do
        let segments = records |> Array.map (fun record -> segmentOf record.Data)
        let blocks = segments |> Array.map _.Array |> Array.distinct

        // 64 records of 1 KiB fill a block: 500 take 8 blocks, not 500 arrays.
        Assert.Equal(8, blocks.Length)
        Assert.All(blocks, fun block -> Assert.True(block.Length <= 65536, string block.Length))

        for previous, next in Array.pairwise segments do
            if obj.ReferenceEquals(previous.Array, next.Array) then
                Assert.Equal(previous.Offset + previous.Count, next.Offset)

[<Fact>]
let ``a small batch's block is about the size of its payloads, and a payload of 32 KiB or more has its own array`` () =
    for records in decodedBothWays (batchOfSizes [ 100; 100; 100 ]) do
        let block = (segmentOf records[0].Data).Array
        Assert.All(records, fun record -> Assert.Same(block, (segmentOf record.Data).Array))
        Assert.InRange(block.Length, 300, 600)

    for records in decodedBothWays (batchOfSizes [ 10; 32768; 10 ]) do
        let own = segmentOf records[1].Data
        Assert.Equal(32768, own.Array.Length)
        Assert.NotSame(own.Array, (segmentOf records[0].Data).Array)
        Assert.Same((segmentOf records[0].Data).Array, (segmentOf records[2].Data).Array)

[<Fact>]
let ``a batch whose first record is its longest decodes whole, though it has more records than the first suggests`` () =
    // The records' array is sized from the first record's length; shorter records after it make it grow.
    for sizes in [ 3000 :: List.replicate 200 10; [ 5000; 0; 0; 0; 0; 0 ]; List.init 300 (fun i -> 3000 - 10 * i) ] do
        for records in decodedBothWays (batchOfSizes sizes) do
            Assert.Equal(sizes.Length, records.Length)

[<Fact>]
let ``records are equal when their fields are, payloads compared byte by byte`` () =
    let one = record (utf8 "hello") "k" A 1L (at 5L)
    let copy = { one with Data = ReadOnlyMemory((utf8 "xhellox"), 1, 5) }

    Assert.True(one.Equals copy)
    Assert.True((one :> IEquatable<Record>).Equals copy)
    Assert.Equal(one, copy)
    Assert.Equal(one.GetHashCode(), copy.GetHashCode())

    for other in
        [
            { one with Data = ReadOnlyMemory(utf8 "hellO") }
            { one with Data = ReadOnlyMemory(utf8 "hell") }
            { one with PartitionKey = "j" }
            { one with SequenceNumber = seqNo B }
            { one with SubSequenceNumber = 2L }
            { one with ApproximateArrivalTimestamp = None }
        ] do
        Assert.False(one.Equals other, sprintf "%A" other)
        Assert.NotEqual(one, other)

    Assert.False(one.Equals(Unchecked.defaultof<Record>))
