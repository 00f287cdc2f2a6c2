(*
    Where records come from: a deterministic generator, or NDJSON lines (from a file or stdin). Both produce
    partition keys and payloads; `ShardFeed` then numbers them per shard as Kinesis would.
*)
namespace Kcl.Local

open System
open System.Runtime.CompilerServices
open System.Text
open System.Text.Json

/// One record as a producer put it: a partition key and a payload.
type SourceRecord =
    {
        /// The partition key, which picks the shard by its MD5.
        PartitionKey: string
        /// The payload.
        Data: byte[]
    }

/// How the generator makes records.
type GeneratorSettings =
    {
        /// How many records in all, spread over the shards by their partition keys.
        Records: int
        /// How many bytes of printable ASCII each payload has.
        PayloadBytes: int
        /// The seed: the same settings and seed give the same records.
        Seed: int
        /// The partition-key pattern: `{i}` becomes the record's 0-based index, `{r}` a seeded random number.
        KeyPattern: string
    }

    /// 1000 records of 100 bytes, seed 42, keys "pk-{i}".
    static member Default =
        {
            Records = 1000
            PayloadBytes = 100
            Seed = 42
            KeyPattern = "pk-{i}"
        }

/// Making and reading records.
[<RequireQualifiedAccess>]
module RecordSource =
    let private alphabet =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 "B

    // SplitMix64: eight payload bytes per step, where System.Random's seeded generator costs a call per byte (it
    // was most of a generated run's start-up), and the same output on every runtime, which Random does not promise.
    type private SplitMix64(seed: int) =
        let mutable state = uint64 (int64 seed)

        member _.Next() =
            state <- state + 0x9E3779B97F4A7C15UL
            let mutable z = state
            z <- (z ^^^ (z >>> 30)) * 0xBF58476D1CE4E5B9UL
            z <- (z ^^^ (z >>> 27)) * 0x94D049BB133111EBUL
            z ^^^ (z >>> 31)

        // Each byte of a step picks a character: (byte * 63) / 256 is as even as 256 values over 63 allow. Optimised
        // at once: it runs once per record, before any child starts, and tier-0 code would be its slowest part.
        [<MethodImpl(MethodImplOptions.AggressiveOptimization)>]
        member this.Fill(data: byte[]) =
            let table = alphabet
            let mutable i = 0

            while i < data.Length do
                let mutable bits = this.Next()
                let last = min data.Length (i + 8)

                while i < last do
                    data[i] <- table[int ((bits &&& 0xFFUL) * uint64 table.Length >>> 8)]
                    bits <- bits >>> 8
                    i <- i + 1

    /// The generator's records, in order. Deterministic: the same settings give the same records on any runtime.
    let generate (settings: GeneratorSettings) : SourceRecord seq =
        seq {
            let random = SplitMix64 settings.Seed
            let numbered = settings.KeyPattern.Contains "{i}"
            let randomized = settings.KeyPattern.Contains "{r}"

            for i in 0 .. settings.Records - 1 do
                let mutable key = settings.KeyPattern

                if numbered then
                    key <- key.Replace("{i}", string i)

                if randomized then
                    key <- key.Replace("{r}", string (random.Next() >>> 33))

                // Pinned, so on the pinned-object heap, which is never compacted: the stream's records are not
                // copied from one generation to the next while they fill the heap (100,000 records of 1 KiB: about
                // 3 s down to about 1 s here). Uninitialised, since Fill writes every byte.
                let data = GC.AllocateUninitializedArray<byte>(settings.PayloadBytes, true)
                random.Fill data
                yield { PartitionKey = key; Data = data }
        }

    /// Reads one NDJSON line: an object with a string `partitionKey` and either `data` (base64) or `text` (stored
    /// as UTF-8). Other keys are an error, so that a typo does not silently drop a payload.
    let parseLine (line: string) : Result<SourceRecord, string> =
        try
            use document = JsonDocument.Parse line
            let root = document.RootElement

            if root.ValueKind <> JsonValueKind.Object then
                Error "expected a JSON object"
            else
                let props =
                    root.EnumerateObject() |> Seq.map (fun p -> p.Name, p.Value) |> List.ofSeq

                let unknown =
                    props
                    |> List.map fst
                    |> List.filter (fun n -> n <> "partitionKey" && n <> "data" && n <> "text")

                let str name =
                    props
                    |> List.tryFind (fst >> (=) name)
                    |> Option.map (fun (_, v) ->
                        if v.ValueKind = JsonValueKind.String then
                            Ok(v.GetString())
                        else
                            Error(sprintf "%s must be a string" name))

                match unknown, str "partitionKey", str "data", str "text" with
                | name :: _, _, _, _ -> Error(sprintf "unknown key %A: expected partitionKey and data or text" name)
                | _, None, _, _ -> Error "partitionKey is missing"
                | _, Some(Error e), _, _
                | _, _, Some(Error e), _
                | _, _, _, Some(Error e) -> Error e
                | _, Some(Ok key), _, _ when key.Length = 0 -> Error "partitionKey is empty"
                | _, _, Some _, Some _ -> Error "give data or text, not both"
                | _, _, None, None -> Error "data (base64) or text is missing"
                | _, Some(Ok key), Some(Ok data), None ->
                    try
                        Ok
                            {
                                PartitionKey = key
                                Data = Convert.FromBase64String data
                            }
                    with :? FormatException ->
                        Error "data is not base64"
                | _, Some(Ok key), None, Some(Ok text) ->
                    Ok
                        {
                            PartitionKey = key
                            Data = Encoding.UTF8.GetBytes text
                        }
        with :? JsonException as e ->
            Error(sprintf "not JSON: %s" e.Message)
