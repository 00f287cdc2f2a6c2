(*
    The local lease table: one JSON file per application with one entry per shard, its checkpoint (sequence and
    sub-sequence numbers) and the highest sequence number delivered (to count redeliveries after a restart).
    Written atomically (a temporary file renamed over the old one), so a kill never leaves half a file.
*)
namespace Kcl.Local

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes

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
