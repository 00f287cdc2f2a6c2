(*
    The local lease table: one JSON file per application with one entry per shard, its checkpoint (sequence and
    sub-sequence numbers) and the highest sequence number delivered (to count redeliveries after a restart).
    Written atomically (a temporary file renamed over the old one), so a kill never leaves half a file.
*)
namespace Kcl.Local

open System
open System.Collections.Generic
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open System.Threading
open System.Threading.Channels
open System.Threading.Tasks

/// One shard's lease.
type LeaseEntry =
    {
        /// The shard id.
        ShardId: string
        /// The checkpoint: digits or a sentinel such as SHARD_END.
        Checkpoint: string
        /// The checkpoint's sub-sequence number.
        SubSequenceNumber: int64
        /// The highest sequence number ever delivered to a processor of this shard, if any.
        HighestDelivered: string option
    }

/// Reading and writing lease files.
[<RequireQualifiedAccess>]
module LeaseFile =
    /// The lease file of an application in a state directory.
    let path (stateDir: string) (applicationName: string) =
        let safe =
            applicationName
            |> String.map (fun c ->
                if Char.IsAsciiLetterOrDigit c || c = '-' || c = '_' || c = '.' then
                    c
                else
                    '_')

        Path.Combine(stateDir, safe + ".leases.json")

    /// The file's text for these entries, sorted by shard id.
    let render (applicationName: string) (entries: LeaseEntry seq) =
        let shards = JsonArray()

        for e in entries |> Seq.sortBy _.ShardId do
            let node = JsonObject()
            node["shardId"] <- JsonValue.Create e.ShardId
            node["checkpoint"] <- JsonValue.Create e.Checkpoint
            node["subSequenceNumber"] <- JsonValue.Create e.SubSequenceNumber

            node["highestDelivered"] <-
                match e.HighestDelivered with
                | Some s -> JsonValue.Create s
                | None -> null

            shards.Add node

        let root = JsonObject()
        root["applicationName"] <- JsonValue.Create applicationName
        root["shards"] <- shards
        root.ToJsonString(JsonSerializerOptions(WriteIndented = true)) + "\n"

    /// Reads the entries from a file's text.
    let parse (text: string) : Result<LeaseEntry list, string> =
        try
            let root = JsonNode.Parse text

            [
                for node in root["shards"].AsArray() ->
                    {
                        ShardId = node["shardId"].GetValue<string>()
                        Checkpoint = node["checkpoint"].GetValue<string>()
                        SubSequenceNumber = node["subSequenceNumber"].GetValue<int64>()
                        HighestDelivered =
                            match node["highestDelivered"] with
                            | null -> None
                            | n -> Some(n.GetValue<string>())
                    }
            ]
            |> Ok
        with e ->
            Error(sprintf "the lease file cannot be read: %s" e.Message)

    /// Reads a lease file; a missing file holds no leases.
    let load (file: string) : Result<LeaseEntry list, string> =
        if File.Exists file then
            parse (File.ReadAllText file)
        else
            Ok []

    /// Writes the file atomically: a temporary file beside it, flushed, then renamed over it.
    let save (file: string) (applicationName: string) (entries: LeaseEntry seq) =
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath file))
        |> ignore

        let temporary = file + ".tmp"

        do
            use stream =
                new FileStream(temporary, FileMode.Create, FileAccess.Write, FileShare.None)

            let bytes = Text.Encoding.UTF8.GetBytes(render applicationName entries)
            stream.Write(bytes, 0, bytes.Length)
            stream.Flush(true)

        File.Move(temporary, file, true)

/// A run's leases in memory, saved to the lease file in the background: a driver's update costs a dictionary write,
/// not a file write and an fsync on the path between two batches. Saves coalesce (each one writes the newest
/// entries) and are at least `interval` apart, and `CompleteAsync` writes the final state before the run returns,
/// so only a daemon killed with SIGKILL can leave the file behind the run, by at most about `interval`: the records
/// after the stored checkpoint are then delivered again, as after any crash.
[<Sealed>]
type internal LeaseTable(file: string, applicationName: string, stored: LeaseEntry seq, interval: TimeSpan) =
    let leases = Dictionary<string, LeaseEntry>()

    do
        for entry in stored do
            leases[entry.ShardId] <- entry

    let gate = obj ()

    // One pending wake-up at most: updates made while a save runs are picked up by the next one.
    let wake =
        Channel.CreateBounded<unit>(BoundedChannelOptions(1, FullMode = BoundedChannelFullMode.DropWrite))

    let save () =
        LeaseFile.save file applicationName (lock gate (fun () -> List.ofSeq leases.Values))

    let closing = new CancellationTokenSource()

    let writer =
        Task.Run<unit>(fun () ->
            task {
                while! wake.Reader.WaitToReadAsync() do
                    wake.Reader.TryRead() |> ignore
                    save ()

                    try
                        do! Task.Delay(interval, closing.Token)
                    with :? OperationCanceledException ->
                        ()
            })

    /// A table saved at most every 100 ms.
    new(file, applicationName, stored) = LeaseTable(file, applicationName, stored, TimeSpan.FromMilliseconds 100.0)

    /// The entry of a shard, if the table has one.
    member _.TryFind(shardId: string) =
        lock gate (fun () ->
            match leases.TryGetValue shardId with
            | true, entry -> Some entry
            | _ -> None)

    /// Sets an entry without saving (the run saves once when every shard's entry is set).
    member _.Set(entry: LeaseEntry) =
        lock gate (fun () -> leases[entry.ShardId] <- entry)

    /// Saves now, on the caller's thread.
    member _.Save() = save ()

    /// Changes a shard's entry; the file follows in the background.
    member _.Update(shardId: string, change: LeaseEntry -> LeaseEntry) =
        lock gate (fun () -> leases[shardId] <- change leases[shardId])
        wake.Writer.TryWrite() |> ignore

    /// Stops the background saves and writes the final entries; a failure to write is raised here.
    member _.CompleteAsync() : Task =
        task {
            wake.Writer.TryComplete() |> ignore
            closing.Cancel()

            try
                do! writer
            with _ ->
                // The final save below writes the same entries, and raises what went wrong.
                ()

            closing.Dispose()
            save ()
        }
