/// The command line of kcl-local.
module Kcl.Local.Tool.Arguments

open Argu

/// Every flag kcl-local accepts.
[<NoComparison>]
type Argument =
    | [<AltCommandLine("-p"); Unique>] Properties of file: string
    | [<Unique>] Generate of records: int
    | [<Unique>] Shards of count: int
    | [<Unique>] Payload of bytes: int
    | [<Unique>] Seed of seed: int
    | [<Unique>] Key_Pattern of pattern: string
    | [<Unique>] Input of file: string
    | [<Unique>] Kinesis_Endpoint of url: string
    | [<Unique>] Stream of name: string
    | [<Unique>] Stop_After of records: int
    | [<Unique>] State_Dir of dir: string
    | Fresh
    | Inject_Checkpoint_Error of spec: string
    | [<Unique>] Slow_Batches of millis: int
    | [<Unique>] Duplicate_Batches of every: int
    | [<Unique>] Lease_Lost_After of batches: int
    | Jdk17_Charset
    | [<Unique>] Wait_Limit of seconds: int
    | Shared_Cpus
    | Quiet
    | No_Progress
    | Json

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Properties _ ->
                "the daemon's properties file (required); executableName is resolved against the working directory."
            | Generate _ -> "generate N records in all, spread over the shards by partition key."
            | Shards _ -> "the number of shards (default 1; 4 with --generate)."
            | Payload _ -> "payload bytes per generated record (default 100)."
            | Seed _ -> "the generator's seed (default 42)."
            | Key_Pattern _ ->
                "generated partition keys: {i} is the record index, {r} a seeded random number (default pk-{i})."
            | Input _ -> "read NDJSON records ({partitionKey, data(base64)|text}) from a file, or - for stdin."
            | Kinesis_Endpoint _ ->
                "read the stream from this Kinesis endpoint (overrides kinesisEndpoint in the properties; regionName signs, default us-east-1)."
            | Stream _ -> "the stream to read from the Kinesis endpoint (overrides streamName in the properties)."
            | Stop_After _ ->
                "shut down gracefully once this many records were delivered (a Kinesis stream has no end of its own)."
            | State_Dir _ ->
                "where the lease file lives (default: a folder per applicationName under the user's state directory)."
            | Fresh -> "discard the stored checkpoints first."
            | Inject_Checkpoint_Error _ ->
                "NAME[:COUNT][@FROM]: fail COUNT checkpoint requests (default 1, * for all) from the FROM-th (default 1) of each shard with NAME, e.g. ThrottlingException:2. Repeatable."
            | Slow_Batches _ -> "pause this many milliseconds before each batch."
            | Duplicate_Batches _ -> "deliver every Nth batch twice."
            | Lease_Lost_After _ -> "lose each shard's lease after this many batches."
            | Jdk17_Charset -> "write '?' for non-ASCII characters, as a JDK 17 daemon in a POSIX locale does."
            | Wait_Limit _ ->
                "the bound in seconds on each wait for a child when timeoutInSeconds is unset (default 300)."
            | Shared_Cpus ->
                "run each shard's thread and its child wherever the system puts them (default on Linux: a CPU of its own for each shard's thread, while at most half are taken, the children on the others)."
            | Quiet -> "do not forward the children's stderr."
            | No_Progress -> "no live progress display, even on a terminal."
            | Json -> "print the summary as JSON."
