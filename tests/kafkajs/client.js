// kafkajs, unmodified, behind a line protocol the Python tests drive (tests/test_interop_kafkajs.py).
//
//   node client.js OP < request.json        OP: admin | produce | consume
//
// The request is one JSON object on the first line of stdin; the answer is JSON lines on
// stdout, the last {"event": "done", ...} or {"event": "error", ...}. Bytes (keys, values,
// header values) travel as base64, null as null. kafkajs' own log goes to stderr. Every run
// is bounded by the request's timeoutMs: past it the process says so and exits 2.
'use strict'

const readline = require('readline')
const { Kafka, logLevel, CompressionTypes, Partitioners } = require('kafkajs')

const ENCODED = (buffer) => (buffer === null || buffer === undefined ? null : Buffer.from(buffer).toString('base64'))
const DECODED = (text) => (text === null || text === undefined ? null : Buffer.from(text, 'base64'))

function say (line) {
  process.stdout.write(JSON.stringify(line) + '\n')
}

function stderrLog () {
  return ({ namespace, level, log }) => {
    const { message, ...extra } = log
    process.stderr.write(`kafkajs ${level} ${namespace}: ${message} ${JSON.stringify(extra)}\n`)
  }
}

function kafkaFor (request) {
  return new Kafka({
    clientId: request.clientId || 'kafkajs-conformance',
    brokers: [request.bootstrap],
    logLevel: logLevel.WARN,
    logCreator: stderrLog,
    connectionTimeout: 5000,
    requestTimeout: 10000,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 1000 }
  })
}

// admin: the steps in order; each answers one line.
async function admin (kafka, request, lines) {
  const client = kafka.admin()
  await client.connect()
  try {
    for (const step of request.steps) {
      if (step.op === 'createTopics') {
        const created = await client.createTopics({
          topics: step.topics.map((t) => ({
            topic: t.name,
            numPartitions: t.partitions,
            replicationFactor: 1,
            configEntries: Object.entries(t.configs || {}).map(([name, value]) => ({ name, value }))
          })),
          waitForLeaders: true
        })
        say({ event: 'createTopics', created })
      } else if (step.op === 'fetchTopicMetadata') {
        const { topics } = await client.fetchTopicMetadata({ topics: step.topics })
        say({
          event: 'fetchTopicMetadata',
          topics: topics.map((t) => ({
            name: t.name,
            partitions: t.partitions
              .map((p) => ({ partition: p.partitionId, leader: p.leader, error: p.partitionErrorCode }))
              .sort((a, b) => a.partition - b.partition)
          }))
        })
      } else if (step.op === 'listTopics') {
        say({ event: 'listTopics', topics: (await client.listTopics()).sort() })
      } else if (step.op === 'deleteTopics') {
        await client.deleteTopics({ topics: step.topics, timeout: 5000 })
        say({ event: 'deleteTopics' })
      } else {
        throw new Error(`unknown admin step ${step.op}`)
      }
    }
  } finally {
    await client.disconnect()
  }
}

function messageOf (m) {
  const headers = {}
  for (const [name, value] of m.headers || []) headers[name] = DECODED(value)
  const out = { key: DECODED(m.key), value: DECODED(m.value), headers }
  if (m.partition !== undefined && m.partition !== null) out.partition = m.partition
  if (m.timestamp !== undefined && m.timestamp !== null) out.timestamp = String(m.timestamp)
  return out
}

// produce: one send per entry of request.sends, each answering the partitions' base offsets.
async function produce (kafka, request, lines) {
  const producer = kafka.producer({
    idempotent: Boolean(request.idempotent),
    maxInFlightRequests: request.idempotent ? 1 : undefined,
    allowAutoTopicCreation: false,
    createPartitioner: Partitioners.DefaultPartitioner
  })
  await producer.connect()
  try {
    for (const send of request.sends) {
      const results = await producer.send({
        topic: send.topic,
        acks: send.acks,
        compression: send.compression === 'gzip' ? CompressionTypes.GZIP : CompressionTypes.None,
        messages: send.messages.map(messageOf)
      })
      say({
        event: 'sent',
        results: results.map((r) => ({
          topic: r.topicName,
          partition: r.partition,
          errorCode: r.errorCode,
          baseOffset: Number(r.baseOffset),
          logAppendTime: Number(r.logAppendTime)
        }))
      })
    }
  } finally {
    await producer.disconnect()
  }
}

// consume: a group member from the beginning; every message answers a line. It commits
// (commitOffsets, not autocommit) and stops after request.count messages, or when stdin
// says "stop" (two members share a group until the test stops them).
async function consume (kafka, request, lines) {
  const consumer = kafka.consumer({
    groupId: request.groupId,
    sessionTimeout: request.sessionTimeoutMs || 10000,
    rebalanceTimeout: request.rebalanceTimeoutMs || 10000,
    heartbeatInterval: request.heartbeatIntervalMs || 500,
    maxWaitTimeInMs: 200,
    retry: { retries: 5, initialRetryTime: 100, maxRetryTime: 1000 }
  })
  consumer.on(consumer.events.GROUP_JOIN, (e) => {
    say({ event: 'join', assignment: e.payload.memberAssignment })
  })
  let seen = 0
  let finish
  const finished = new Promise((resolve) => { finish = resolve })
  lines.on('line', (line) => { if (line.trim() === 'stop') finish() })
  lines.on('close', () => finish())
  await consumer.connect()
  try {
    await consumer.subscribe({ topics: [request.topic], fromBeginning: true })
    await consumer.run({
      autoCommit: false,
      eachMessage: async ({ topic, partition, message }) => {
        const headers = {}
        for (const [name, value] of Object.entries(message.headers || {})) {
          headers[name] = Array.isArray(value) ? value.map(ENCODED) : ENCODED(value)
        }
        say({
          event: 'message',
          topic,
          partition,
          offset: Number(message.offset),
          key: ENCODED(message.key),
          value: ENCODED(message.value),
          headers,
          timestamp: Number(message.timestamp)
        })
        await consumer.commitOffsets([{ topic, partition, offset: String(Number(message.offset) + 1) }])
        seen += 1
        if (request.count && seen >= request.count) finish()
      }
    })
    await finished
    say({ event: 'committed', count: seen })
  } finally {
    await consumer.disconnect()
  }
}

const OPS = { admin, produce, consume }

async function main () {
  const op = OPS[process.argv[2]]
  if (!op) throw new Error(`usage: node client.js ${Object.keys(OPS).join('|')} < request.json`)
  const lines = readline.createInterface({ input: process.stdin })
  const first = await new Promise((resolve, reject) => {
    lines.once('line', resolve)
    lines.once('close', () => reject(new Error('no request on stdin')))
  })
  const request = JSON.parse(first)
  const timer = setTimeout(() => {
    say({ event: 'error', message: `timed out after ${request.timeoutMs} ms` })
    process.exit(2)
  }, request.timeoutMs || 30000)
  await op(kafkaFor(request), request, lines)
  clearTimeout(timer)
  say({ event: 'done' })
}

main().then(
  () => process.exit(0),
  (error) => {
    say({ event: 'error', message: String(error && error.stack ? error.stack : error), type: error && error.type })
    process.exit(1)
  }
)
