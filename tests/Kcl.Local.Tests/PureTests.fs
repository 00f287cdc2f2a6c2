/// The pure parts: properties syntax, command splitting, shard mapping, the generator, lease files, fault specs.
module Kcl.Local.Tests.PureTests

open System
open System.Numerics
open FsCheck
open FsCheck.FSharp
open Kcl.Core
open Kcl.Local
open Xunit

let private parsed text =
    match JavaProperties.parse text with
    | Ok entries -> entries
    | Error e -> failwithf "unexpected error: %s" e

[<Fact>]
let ``Properties accept '=', ':' and white space between key and value`` () =
    Assert.Equal<(string * string) list>(
        [ "a", "1"; "b", "2"; "c", "3"; "d", "4"; "e", "" ],
        parsed "a=1\n  b : 2\nc 3\nd\t=\t4\ne"
    )

[<Fact>]
let ``Properties skip '#' and '!' comments and blank lines`` () =
    Assert.Equal<(string * string) list>(
        [ "a", "1" ],
        parsed "# comment\n! another\n\n   \na = 1\n  # indented comment"
    )

[<Fact>]
let ``A trailing odd backslash continues a line and the next line's indent is dropped`` () =
    Assert.Equal<(string * string) list>(
        [ "key", "one two"; "path", "c:\\"; "next", "x" ],
        parsed "key = one \\\n     two\npath = c:\\\\\nnext = x"
    )

[<Fact>]
let ``A comment line ending in a backslash does not continue`` () =
    Assert.Equal<(string * string) list>([ "a", "1" ], parsed "# comment \\\na = 1")

[<Fact>]
let ``Escapes are resolved in keys and values, and unknown escapes stand for the character`` () =
    Assert.Equal<(string * string) list>(
        [ "my key", "tab\there A\u00e9 q=" ],
        parsed "my\\ key = tab\\there \\u0041\\u00e9 \\q\\="
    )

[<Fact>]
let ``The last of duplicate keys wins and trailing white space is kept`` () =
    Assert.Equal<(string * string) list>([ "b", "2"; "a", "3  " ], parsed "a = 1\nb = 2\na = 3  ")

[<Fact>]
let ``A malformed unicode escape is an error`` () =
    match JavaProperties.parse "a = \\u12" with
    | Error message -> Assert.Contains("Malformed \\uxxxx encoding.", message)
    | Ok entries -> failwithf "expected an error, got %A" entries

[<Fact>]
let ``The sample properties files are valid and name the keys the local daemon ignores`` () =
    for name in [ "csharp-consumer"; "fsharp-consumer" ] do
        let path = IO.Path.Combine(Helpers.repositoryRoot, "samples", name + ".properties")

        match DaemonConfig.load path with
        | Error problems -> failwithf "%A" problems
        | Ok config ->
            Assert.Equal<string list>([ sprintf "artifacts/samples/%s/%s" name name ], config.Command)
            Assert.Equal(InitialPosition.TrimHorizon, config.InitialPosition)
            Assert.Equal(10000, config.MaxRecords)
            Assert.Contains("retrievalMode", config.IgnoredKeys)
            Assert.DoesNotContain("regionName", config.IgnoredKeys)
            Assert.DoesNotContain("executableName", config.IgnoredKeys)

[<Fact>]
let ``Missing required keys are reported with the daemon's messages`` () =
    match DaemonConfig.ofProperties [ "maxRecords", "20000" ] with
    | Ok _ -> failwith "expected errors"
    | Error problems ->
        Assert.Contains(
            "Must provide an executable name in the properties file, e.g. executableName = sampleapp.py",
            problems
        )

        Assert.Contains("Application name is required", problems)
        Assert.Contains("A basic set of AWS credentials must be provided", problems)
        Assert.Contains(problems, fun p -> p.Contains "maxRecords must be at most 10000")

[<Fact>]
let ``Defaults and bounds follow the daemon: LATEST, 10000 records, idle time at least 200 ms`` () =
    let config = Helpers.config "x" [ "idleTimeBetweenReadsInMillis = 50" ]
    Assert.Equal(TimeSpan.FromMilliseconds 200.0, config.IdleTimeBetweenReads)
    Assert.Equal(None, config.Timeout)

    match
        DaemonConfig.ofProperties
            [
                "executableName", "x"
                "applicationName", "a"
                "streamName", "s"
                "awsCredentialsProvider", "p"
            ]
    with
    | Ok config ->
        Assert.Equal(InitialPosition.Latest, config.InitialPosition)
        Assert.Equal(10000, config.MaxRecords)
        Assert.False config.CallProcessRecordsEvenForEmptyRecordList
    | Error problems -> failwithf "%A" problems

[<Fact>]
let ``executableName splits on runs of ASCII spaces only`` () =
    Assert.Equal<string list>([ "dotnet"; "My.dll"; "--flag" ], DaemonConfig.splitCommand "dotnet   My.dll --flag  ")
    Assert.Equal<string list>([ "a\tb" ], DaemonConfig.splitCommand "a\tb")
    Assert.Equal<string list>([ ""; "x" ], DaemonConfig.splitCommand " x")

[<Fact>]
let ``Any space-free words joined by runs of spaces split back into the same words`` () =
    let word =
        Gen.elements [ "a"; "b.dll"; "-x"; "--k=v"; "p/q"; "\t" ] |> Gen.nonEmptyListOf

    let gaps = Gen.choose (1, 4)

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 200,
        Prop.forAll (Arb.fromGen (Gen.zip word gaps)) (fun (words, gap) ->
            DaemonConfig.splitCommand (String.Join(String(' ', gap), words)) = words)
    )

[<Fact>]
let ``A partition key's hash key is its MD5 read as an unsigned big-endian integer`` () =
    Assert.Equal(
        BigInteger.Parse("0d41d8cd98f00b204e9800998ecf8427e", Globalization.NumberStyles.HexNumber),
        Shards.hashKey ""
    )
    // 0xd4... lies in the upper half of the hash-key space, and in the fourth of five ranges.
    Assert.Equal(1, Shards.shardOf 2 "")
    Assert.Equal(4, Shards.shardOf 5 "")
    Assert.Equal(0, Shards.shardOf 1 "anything")

[<Fact>]
let ``The 128-bit shard mapping agrees with the BigInteger one, at range boundaries too`` () =
    let toBig (key: UInt128) =
        BigInteger.Parse("0" + key.ToString("X"), Globalization.NumberStyles.HexNumber)

    let ofBig (key: BigInteger) =
        UInt128.Parse(key.ToString("X32").TrimStart('0').PadLeft(1, '0'), Globalization.NumberStyles.HexNumber)

    // Shard counts that divide 2^128 (powers of two) and ones that do not, up to a stream larger than Kinesis's
    // default quota allows; keys drawn at random and at a range's first key, one below it and one above it.
    let shardCounts =
        Gen.oneof [ Gen.choose (2, 70); Gen.choose (1, 13) |> Gen.map (fun p -> 1 <<< p); Gen.choose (2, 10_000) ]

    let gen =
        gen {
            let! shards = shardCounts
            let! bytes = Gen.arrayOfLength 16 (Gen.choose (0, 255) |> Gen.map byte)
            let! boundary = Gen.choose (0, shards - 1)
            let! offset = Gen.elements [ -1; 0; 1 ]
            let! atBoundary = Gen.elements [ true; false ]

            let key =
                if atBoundary then
                    let start = (Shards.startingHashKeys shards)[boundary] + BigInteger offset
                    BigInteger.Max(BigInteger.Zero, BigInteger.Min(start, Shards.hashKeySpace - BigInteger.One))
                else
                    BigInteger(ReadOnlySpan bytes, isUnsigned = true, isBigEndian = true)

            return shards, key
        }

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 300,
        Prop.forAll (Arb.fromGen gen) (fun (shards, key) ->
            toBig (ofBig key) = key
            && Shards.shardOfHashKey128 shards (ofBig key) = Shards.shardOfHashKey shards key)
    )
    // Partition keys end to end, MD5 included.
    for shards in [ 1; 2; 3; 4; 5; 7; 16; 1000 ] do
        for i in 0..200 do
            let key = sprintf "pk-%d" i
            Assert.Equal(Shards.shardOfHashKey shards (Shards.hashKey key), Shards.shardOf shards key)

[<Fact>]
let ``Every hash key falls in exactly the range of the shard it maps to`` () =
    let gen =
        Gen.zip (Gen.choose (1, 64)) (Gen.arrayOfLength 16 (Gen.choose (0, 255) |> Gen.map byte))

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 500,
        Prop.forAll (Arb.fromGen gen) (fun (shards, bytes) ->
            let key = BigInteger(ReadOnlySpan bytes, isUnsigned = true, isBigEndian = true)
            let index = Shards.shardOfHashKey shards key
            let starts = Shards.startingHashKeys shards

            let upper =
                if index = shards - 1 then
                    Shards.hashKeySpace
                else
                    starts[index + 1]

            index >= 0 && index < shards && starts[index] <= key && key < upper)
    )

[<Fact>]
let ``Sequence numbers have 56 digits and grow with the ordinal`` () =
    let a = Shards.sequenceNumber 3 9L
    let b = Shards.sequenceNumber 3 10L
    Assert.Equal(56, a.Length)
    Assert.True(Shards.compareDigits a b < 0)
    Assert.True(String.CompareOrdinal(a, b) < 0)

[<Fact>]
let ``The generator is deterministic for a seed and differs across seeds`` () =
    let settings =
        { GeneratorSettings.Default with
            Records = 50
            PayloadBytes = 20
        }

    let once = RecordSource.generate settings |> List.ofSeq
    let again = RecordSource.generate settings |> List.ofSeq
    let other = RecordSource.generate { settings with Seed = 7 } |> List.ofSeq
    Assert.Equal<SourceRecord list>(once, again)
    Assert.NotEqual<SourceRecord list>(once, other)
    Assert.Equal("pk-49", (List.last once).PartitionKey)
    Assert.All(once, fun r -> Assert.Equal(20, r.Data.Length))

[<Fact>]
let ``NDJSON lines carry a partition key and base64 data or text`` () =
    Assert.Equal(
        Ok
            {
                PartitionKey = "k"
                Data = [| 1uy; 2uy |]
            },
        RecordSource.parseLine """{"partitionKey":"k","data":"AQI="}"""
    )

    Assert.Equal(
        Ok
            {
                PartitionKey = "ключ"
                Data = Text.Encoding.UTF8.GetBytes "é"
            },
        RecordSource.parseLine """{"partitionKey":"ключ","text":"é"}"""
    )

    for bad, expected in
        [
            """{"data":"AQI="}""", "partitionKey is missing"
            """{"partitionKey":"k","data":"AQI=","text":"x"}""", "not both"
            """{"partitionKey":"k","txt":"x"}""", "unknown key"
            """{"partitionKey":"k","data":"!!"}""", "not base64"
            "nope", "not JSON"
        ] do
        match RecordSource.parseLine bad with
        | Error message -> Assert.Contains(expected, message)
        | Ok record -> failwithf "%s parsed as %A" bad record

[<Fact>]
let ``A lease file reads back what was written`` () =
    let entry =
        gen {
            let! shard = Gen.choose (0, 99)

            let! checkpoint =
                Gen.oneof
                    [
                        Gen.elements [ "TRIM_HORIZON"; "LATEST"; "SHARD_END" ]
                        Gen.choose (1, 1000) |> Gen.map (fun n -> Shards.sequenceNumber shard (int64 n))
                    ]

            let! sub = Gen.choose (0, 5) |> Gen.map int64

            let! highest =
                Gen.optionOf (Gen.choose (1, 1000) |> Gen.map (fun n -> Shards.sequenceNumber shard (int64 n)))

            return
                {
                    ShardId = Shards.shardId shard
                    Checkpoint = checkpoint
                    SubSequenceNumber = sub
                    HighestDelivered = highest
                }
        }

    let entries =
        Gen.listOf entry |> Gen.map (List.distinctBy _.ShardId >> List.sortBy _.ShardId)

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 100,
        Prop.forAll (Arb.fromGen entries) (fun entries -> LeaseFile.parse (LeaseFile.render "app" entries) = Ok entries)
    )

[<Fact>]
let ``A lease file is written atomically and replaces the previous one`` () =
    let dir = Helpers.tempDir ()
    let file = LeaseFile.path dir "my app/1"
    Assert.EndsWith("my_app_1.leases.json", file)

    let entry =
        {
            ShardId = Shards.shardId 0
            Checkpoint = "TRIM_HORIZON"
            SubSequenceNumber = 0L
            HighestDelivered = None
        }

    LeaseFile.save file "my app/1" [ entry ]
    LeaseFile.save file "my app/1" [ { entry with Checkpoint = "SHARD_END" } ]
    Assert.Equal(Ok [ { entry with Checkpoint = "SHARD_END" } ], LeaseFile.load file)
    Assert.False(IO.File.Exists(file + ".tmp"))
    Assert.Equal(Ok [], LeaseFile.load (IO.Path.Combine(dir, "none.json")))

[<Fact>]
let ``A lease table saves its updates in the background and its final state when it completes`` () =
    task {
        let dir = Helpers.tempDir ()
        let file = LeaseFile.path dir "app"

        let entry shard =
            {
                ShardId = Shards.shardId shard
                Checkpoint = "TRIM_HORIZON"
                SubSequenceNumber = 0L
                HighestDelivered = None
            }

        let table = LeaseTable(file, "app", [ entry 0 ], TimeSpan.FromMilliseconds 50.0)
        table.Set(entry 1)
        table.Save()
        Assert.Equal(Ok [ entry 0; entry 1 ], LeaseFile.load file)

        // Many updates in a burst: the saves coalesce, and the last one wins.
        for n in 1..200 do
            table.Update(
                Shards.shardId 1,
                fun e ->
                    { e with
                        Checkpoint = Shards.sequenceNumber 1 (int64 n)
                    }
            )

        // Written without CompleteAsync, by the background saves (polled, for a loaded machine).
        let last =
            { entry 1 with
                Checkpoint = Shards.sequenceNumber 1 200L
            }

        let clock = Diagnostics.Stopwatch.StartNew()

        while LeaseFile.load file <> Ok [ entry 0; last ]
              && clock.Elapsed < TimeSpan.FromSeconds 30.0 do
            do! Threading.Tasks.Task.Delay 20

        Assert.Equal(Ok [ entry 0; last ], LeaseFile.load file)
        table.Update(Shards.shardId 0, fun e -> { e with Checkpoint = "SHARD_END" })
        do! table.CompleteAsync()

        Assert.Equal(
            Ok
                [
                    { entry 0 with
                        Checkpoint = "SHARD_END"
                    }
                    last
                ],
            LeaseFile.load file
        )

        Assert.Equal(Some last, table.TryFind(Shards.shardId 1))
    }

[<Fact>]
let ``Fault specs read NAME, COUNT and FROM with their defaults`` () =
    Assert.Equal(Ok(FaultRule.Times(CheckpointError.Throttling, 1, 2)), FaultSpec.parse "ThrottlingException:2")
    Assert.Equal(Ok(FaultRule.Always(CheckpointError.Shutdown, 3)), FaultSpec.parse "ShutdownException:*@3")
    Assert.Equal(Ok(FaultRule.Times(CheckpointError.Throttling, 1, 1)), FaultSpec.parse "Throttling")

    Assert.Equal(
        Ok(FaultRule.Times(CheckpointError.Other "NullPointerException", 4, 1)),
        FaultSpec.parse "NullPointerException@4"
    )

    for bad in
        [
            "ThrottlingException:0"
            "ThrottlingException:x"
            "ThrottlingException@0"
            ""
            "a b"
        ] do
        Assert.True(Result.isError (FaultSpec.parse bad), bad)

// ---- a shard's feed -----------------------------------------------------------------------------------------------

let private filled count =
    let feed = ShardFeed 0

    for i in 1..count do
        feed.Add({ PartitionKey = "pk"; Data = [| byte i |] }, DateTimeOffset.UnixEpoch)

    feed

let private sequencesOf (read: FeedRead) =
    match read with
    | FeedRead.Records(records, _) -> [ for r in records -> r.SequenceNumber.Value ]
    | other -> failwithf "expected records, got %A" other

[<Fact>]
let ``A feed lets go of released records in steps of half what it holds, and numbers on after them`` () =
    let feed = filled 10

    // Four of ten is less than half: all ten are still held.
    feed.Release 4
    Assert.Equal(10, feed.Held)
    Assert.Equal<string list>([ Shards.sequenceNumber 0 1L ], sequencesOf (feed.Read(0, 1)))

    feed.Release 6
    Assert.Equal(4, feed.Held)
    Assert.Equal(10, feed.Count)
    Assert.Throws<ArgumentException>(fun () -> feed.Read(5, 1) |> ignore) |> ignore
    Assert.Equal<string list>([ for i in 7L .. 10L -> Shards.sequenceNumber 0 i ], sequencesOf (feed.Read(6, 100)))

    // A record added now is the eleventh, and positions stay the stream's own.
    feed.Add({ PartitionKey = "pk"; Data = [| 11uy |] }, DateTimeOffset.UnixEpoch)
    Assert.Equal(11, feed.Count)
    Assert.Equal<string list>([ Shards.sequenceNumber 0 11L ], sequencesOf (feed.Read(10, 100)))
    Assert.Equal(8, feed.PositionAfter(Shards.sequenceNumber 0 8L))
    // A released record's position is the first one held.
    Assert.Equal(6, feed.PositionAfter(Shards.sequenceNumber 0 2L))

    feed.Release 11
    Assert.Equal(0, feed.Held)
    feed.Complete()
    Assert.Equal(FeedRead.Ended, feed.Read(11, 100))

[<Fact>]
let ``A feed's position after a sequence number is the first record above it, aggregates and releases included`` () =
    // Non-decreasing sequence numbers, as a shard's are: an aggregate's records share one.
    let case =
        gen {
            let! ordinals = Gen.listOf (Gen.elements [ 0; 0; 1; 1; 2; 1000 ]) |> Gen.map (List.scan (+) 1)
            let! release = Gen.choose (0, 40)
            // Half the probes at or beside a record's own number, where "above" and "at or above" part.
            let! probe =
                Gen.oneof
                    [
                        Gen.choose (0, 1100)
                        Gen.map2 (+) (Gen.elements [ -1; 0; 1 ]) (Gen.elements ordinals)
                    ]

            return ordinals, release, probe
        }

    Check.One(
        Config.QuickThrowOnFailure.WithMaxTest 500,
        Prop.forAll (Arb.fromGen case) (fun (ordinals, release, probe) ->
            let digits (ordinal: int) = Shards.sequenceNumber 0 (int64 ordinal)
            let feed = ShardFeed 0

            for ordinal in ordinals do
                feed.AddRecord
                    {
                        Data = ReadOnlyMemory [| 1uy |]
                        PartitionKey = "pk"
                        SequenceNumber = SequenceNumber.parse (digits ordinal)
                        SubSequenceNumber = 0L
                        ApproximateArrivalTimestamp = None
                    }

            feed.Release release
            let firstHeld = feed.Count - feed.Held
            let above = ordinals |> List.tryFindIndex (fun o -> o > probe) |> Option.defaultValue ordinals.Length
            Assert.Equal(max firstHeld above, feed.PositionAfter(digits probe)))
    )

[<Fact>]
let ``A CPU plan gives shards' threads CPUs of their own up to half the CPUs, and children the rest`` () =
    let plan = CpuPlan [| 3; 5; 7; 9 |]
    Assert.Equal(Some 3, plan.TryReserve())
    Assert.Equal(Some 5, plan.TryReserve())
    Assert.Equal(None, plan.TryReserve())
    Assert.Equal<int[]>([| 7; 9 |], plan.ForChildren())
    plan.Release 3
    Assert.Equal<int[]>([| 3; 7; 9 |], plan.ForChildren())
    Assert.Equal(Some 3, plan.TryReserve())

    let pair = CpuPlan [| 0; 1 |]
    Assert.Equal(Some 0, pair.TryReserve())
    Assert.Equal<int[]>([| 1 |], pair.ForChildren())
    Assert.Equal(None, pair.TryReserve())
    // One CPU, or none known (not Linux): nothing to set apart.
    Assert.Equal(None, (CpuPlan [| 0 |]).TryReserve())
    Assert.Equal(None, (CpuPlan [||]).TryReserve())
