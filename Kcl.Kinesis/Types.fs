(*
    The client's public types: options, results and the one exception. Plain classes and records, no F#-only types,
    so C# (the Producer sample) reads them naturally.
*)
namespace Kcl.Kinesis

open System
open System.Collections.Generic

/// Where GetShardIterator starts reading.
type ShardIteratorType =
    /// The oldest record still in the shard.
    | TrimHorizon = 0
    /// Just after the newest record: only records put after the call.
    | Latest = 1
    /// At the given sequence number.
    | AtSequenceNumber = 2
    /// Just after the given sequence number (a checkpoint).
    | AfterSequenceNumber = 3

/// A failure Kinesis (or the way to it) reported, with the service's error code.
type KinesisException(errorCode: string, message: string, statusCode: int, inner: exn) =
    inherit Exception(message, inner)

    /// A failure without an inner exception.
    new(errorCode, message, statusCode) = KinesisException(errorCode, message, statusCode, null)

    /// The service's error type, e.g. ResourceNotFoundException, ExpiredIteratorException; or EndpointUnreachable,
    /// UnexpectedResponse, PutRecordsFailed for failures the client names itself.
    member _.ErrorCode = errorCode
    /// The HTTP status, or 0 when there was no response.
    member _.StatusCode = statusCode

/// Where and how the client talks to Kinesis. Region and credentials default from the environment.
[<Sealed>]
type KinesisClientOptions() =
    /// The region, e.g. "us-east-1"; null means AWS_REGION, then AWS_DEFAULT_REGION.
    member val Region: string = null with get, set
    /// The endpoint, e.g. http://127.0.0.1:4567 for an emulator; null means https://kinesis.REGION.amazonaws.com.
    member val Endpoint: Uri = null with get, set
    /// The credentials; null means the environment variables, then the AWS_PROFILE profile of the shared files.
    member val Credentials: AwsCredentials = null with get, set
    /// How many times a throttled or failed (5xx, network) request is tried in all; default 8.
    member val MaxAttempts = 8 with get, set
    /// The first backoff delay, doubled on each retry (with jitter) up to MaxDelay; default 100 ms.
    member val BaseDelay = TimeSpan.FromMilliseconds 100.0 with get, set
    /// The longest backoff delay; default 5 s.
    member val MaxDelay = TimeSpan.FromSeconds 5.0 with get, set
    /// The limit on each HTTP request; default 30 s.
    member val RequestTimeout = TimeSpan.FromSeconds 30.0 with get, set

/// A stream's state, from DescribeStreamSummary.
type StreamSummary =
    {
        /// The stream's name.
        StreamName: string
        /// The stream's ARN.
        StreamArn: string
        /// CREATING, DELETING, ACTIVE or UPDATING.
        StreamStatus: string
        /// How many shards are open.
        OpenShardCount: int
    }

/// One shard, from ListShards.
type Shard =
    {
        /// The shard's id, e.g. shardId-000000000000.
        ShardId: string
        /// The parent's id after a split or merge, or null.
        ParentShardId: string
        /// The other parent's id after a merge, or null.
        AdjacentParentShardId: string
        /// The lowest hash key the shard holds (decimal).
        StartingHashKey: string
        /// The highest hash key the shard holds (decimal).
        EndingHashKey: string
        /// The first sequence number of the shard.
        StartingSequenceNumber: string
        /// The last sequence number of a closed shard, or null while it is open.
        EndingSequenceNumber: string
    }

    /// True once the shard has been split or merged: it takes no more records.
    member this.IsClosed = not (isNull this.EndingSequenceNumber)

/// One record to put with PutRecords.
type PutRecordsEntry =
    {
        /// The partition key, which picks the shard by its MD5.
        PartitionKey: string
        /// The payload, at most 1 MiB.
        Data: byte[]
    }

/// Where a put record went.
type PutResult =
    {
        /// The shard that took the record.
        ShardId: string
        /// The record's sequence number in that shard.
        SequenceNumber: string
    }

/// One record read with GetRecords.
type KinesisRecord =
    {
        /// The record's sequence number (a decimal string, often longer than 64 bits).
        SequenceNumber: string
        /// The partition key it was put with.
        PartitionKey: string
        /// The payload.
        Data: byte[]
        /// When Kinesis took the record.
        ApproximateArrivalTimestamp: DateTimeOffset
    }

/// What GetRecords returned.
type RecordsBatch =
    {
        /// The records, in sequence-number order; possibly none.
        Records: IReadOnlyList<KinesisRecord>
        /// The iterator for the next call, or null once a closed shard has been read to its end.
        NextShardIterator: string
        /// How far behind the shard's tip this batch is, in milliseconds.
        MillisBehindLatest: int64
    }
